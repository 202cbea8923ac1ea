"""Who a call is made for: the run, workflow, API key and team in progress (one context variable).

Set by ``store.run(...)`` and ``Workflow.run`` (run and workflow), by the gateway (key and team),
or by hand with ``spend_scope(...)``; read by ``SpendControl`` to pick the budgets a call is
charged to. Context variables follow asyncio tasks, so concurrent runs never see each other's scope.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

__all__ = ["CallScope", "current_scope", "spend_scope"]


class CallScope(NamedTuple):
    run: str | None = None
    workflow: str | None = None
    key: str | None = None
    team: str | None = None


_EMPTY = CallScope()
_SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("turnout_scope", default=None)


def current_scope() -> CallScope:
    return _SCOPE.get() or _EMPTY


@contextmanager
def spend_scope(*, run: str | None = None, workflow: str | None = None, key: str | None = None,
                team: str | None = None) -> Iterator[CallScope]:
    """``with spend_scope(key="k-42", team="search"):`` — calls inside are charged to those budgets too.
    Fields left ``None`` keep the enclosing scope's value."""
    cur = current_scope()
    new = CallScope(run or cur.run, workflow or cur.workflow, key or cur.key, team or cur.team)
    token = _SCOPE.set(new)
    try:
        yield new
    finally:
        _SCOPE.reset(token)
