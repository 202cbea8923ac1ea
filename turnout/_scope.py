"""The run scope: the store and run a call belongs to, its workflow, API key and team, and the
meters it is charged to — one context variable, read by everything that records or charges.

Set by ``store.run(...)`` and ``Workflow.run`` (store, run and workflow), by the gateway (store,
run, key, team and the key's meter), or by hand with ``spend_scope(...)``. Read by ``Traced``,
routers, votes, sections and workflow steps (``active_run()``: the store and run to record into),
by ``SpendControl`` (the budgets a call is charged to) and by ``Budgeted`` (the meters). Context
variables follow asyncio tasks, so concurrent runs never see each other's scope.

``meters`` are ledgers (``turnout.policies.ledger.Ledger``) that every model call in the scope must
also reserve against, besides its model's own — the gateway puts the calling key's budget here (in
memory or in Redis), so a workflow's calls, ``turnout/auto``'s and a plain model's are charged the
same way, call by call.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

__all__ = ["CallScope", "RunScope", "active_run", "current_scope", "spend_scope"]


class RunScope(NamedTuple):
    store: Any = None
    run: str | None = None
    workflow: str | None = None
    key: str | None = None
    team: str | None = None
    meters: tuple[Any, ...] = ()


CallScope = RunScope  # the name it had before the store joined it

_EMPTY = RunScope()
_SCOPE: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar("turnout_scope", default=None)


def current_scope() -> RunScope:
    return _SCOPE.get() or _EMPTY


def active_run() -> tuple[Any, str] | None:
    """``(store, run_id)`` inside a run that records to a store (``with store.run(...)``), else None."""
    sc = _SCOPE.get()
    return (sc.store, sc.run) if sc is not None and sc.store is not None and sc.run is not None else None


@contextmanager
def spend_scope(*, store: Any = None, run: str | None = None, workflow: str | None = None, key: str | None = None,
                team: str | None = None, meters: tuple[Any, ...] = ()) -> Iterator[RunScope]:
    """``with spend_scope(key="k-42", team="search"):`` — calls inside are charged to those budgets too.
    Fields left ``None`` keep the enclosing scope's value; ``meters`` are added to the enclosing ones."""
    cur = current_scope()
    new = RunScope(store if store is not None else cur.store, run or cur.run, workflow or cur.workflow, key or cur.key,
                   team or cur.team, cur.meters + tuple(m for m in meters if m not in cur.meters))
    token = _SCOPE.set(new)
    try:
        yield new
    finally:
        _SCOPE.reset(token)
