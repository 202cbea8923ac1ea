"""Who a call is made for: the run, workflow, API key and team in progress (one context variable).

Set by ``store.run(...)`` and ``Workflow.run`` (run and workflow), by the gateway (key and team),
or by hand with ``spend_scope(...)``; read by ``SpendControl`` to pick the budgets a call is
charged to. Context variables follow asyncio tasks, so concurrent runs never see each other's scope.

``meters`` are budgets outside the process's own ledgers that every model call in the scope must
also reserve against — the gateway puts the calling key's budget here (in memory or in Redis), so
a workflow's calls, ``turnout/auto``'s and a plain model's are charged the same way, call by call.
A meter is async: ``await reserve(amount, model=) -> hold``, ``await settle(hold, actual)``; its
``reserve`` raises ``BudgetExceeded`` when the call could take it past its limit.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

__all__ = ["CallScope", "current_scope", "spend_scope"]


class CallScope(NamedTuple):
    run: str | None = None
    workflow: str | None = None
    key: str | None = None
    team: str | None = None
    meters: tuple[Any, ...] = ()


_EMPTY = CallScope()
_SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("turnout_scope", default=None)


def current_scope() -> CallScope:
    return _SCOPE.get() or _EMPTY


@contextmanager
def spend_scope(*, run: str | None = None, workflow: str | None = None, key: str | None = None,
                team: str | None = None, meters: tuple[Any, ...] = ()) -> Iterator[CallScope]:
    """``with spend_scope(key="k-42", team="search"):`` — calls inside are charged to those budgets too.
    Fields left ``None`` keep the enclosing scope's value; ``meters`` are added to the enclosing ones."""
    cur = current_scope()
    new = CallScope(run or cur.run, workflow or cur.workflow, key or cur.key, team or cur.team,
                    cur.meters + tuple(m for m in meters if m not in cur.meters))
    token = _SCOPE.set(new)
    try:
        yield new
    finally:
        _SCOPE.reset(token)
