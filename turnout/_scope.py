"""The run scope: the store and run a call belongs to, its workflow, API key and team, and the
meters it is charged to — one context variable, read by everything that records or charges.

A run is opened by ``open_run(...)`` — the one way, used by ``store.run(...)``, ``Workflow.run``
(and so batches, local and on Ray) and the gateway's ``request_run``: it starts the run in the
store, sets the scope (store, run, workflow, key, team, meters) and finishes the run exactly once
(``error`` when the block raises, else the status and output set on the handle). Fields can also
be set by hand with ``spend_scope(...)``. Read by ``Traced``,
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
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NamedTuple

from . import _telemetry

__all__ = ["CallScope", "OpenRun", "RunScope", "active_run", "current_scope", "open_run", "spend_scope"]


class RunScope(NamedTuple):
    store: Any = None
    run: str | None = None
    workflow: str | None = None
    key: str | None = None
    team: str | None = None
    meters: tuple[Any, ...] = ()
    deadline: float | None = None  # time.monotonic() by which every call in the run must be done
    cache: Any = None  # the caller's response-cache opt-in (a ``CacheSettings``: a gateway key's), else None


CallScope = RunScope  # the name it had before the store joined it

_EMPTY = RunScope()
_SCOPE: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar("turnout_scope", default=None)


def current_scope() -> RunScope:
    return _SCOPE.get() or _EMPTY


def active_run() -> tuple[Any, str] | None:
    """``(store, run_id)`` inside a run that records to a store (``with store.run(...)``), else None."""
    sc = _SCOPE.get()
    return (sc.store, sc.run) if sc is not None and sc.store is not None and sc.run is not None else None


class spend_scope:  # noqa: N801 - a context manager, named and used like the function it was
    """``with spend_scope(key="k-42", team="search"):`` — calls inside are charged to those budgets too.
    Fields left ``None`` keep the enclosing scope's value; ``meters`` are added to the enclosing ones;
    ``deadline`` (a ``time.monotonic()`` value) can only come sooner than the enclosing one. The
    enclosing scope is the one in force when the block is entered. (A class, not a generator: every
    run and every streamed answer enters one.)"""

    __slots__ = ("_args", "_token")

    def __init__(self, *, store: Any = None, run: str | None = None, workflow: str | None = None, key: str | None = None,
                 team: str | None = None, meters: tuple[Any, ...] = (), deadline: float | None = None, cache: Any = None) -> None:
        self._args = (store, run, workflow, key, team, meters, deadline, cache)
        self._token: contextvars.Token[RunScope | None] | None = None

    def __enter__(self) -> RunScope:
        if self._token is not None:
            raise RuntimeError("a spend_scope is entered once at a time")
        store, run, workflow, key, team, meters, deadline, cache = self._args
        cur = current_scope()
        due = cur.deadline if deadline is None else (deadline if cur.deadline is None else min(deadline, cur.deadline))
        new = RunScope(store if store is not None else cur.store, run or cur.run, workflow or cur.workflow, key or cur.key,
                       team or cur.team, cur.meters + tuple(m for m in meters if m not in cur.meters) if meters else cur.meters, due,
                       cache if cache is not None else cur.cache)
        self._token = _SCOPE.set(new)
        return new

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            token, self._token = self._token, None
            _SCOPE.reset(token)


@contextmanager
def _attached(span: Any, inner: spend_scope) -> Iterator[RunScope]:
    """The run's span re-entered around its scope (tracing on)."""
    with _telemetry.attached(span), inner as sc:
        yield sc


class OpenRun:
    """A run opened by ``open_run``: ``run_id``, and what it will finish with (``status``,
    ``output``). ``scope()`` re-enters its scope (a stream's body, after the handler returned);
    ``detach()`` hands the finish to whoever calls ``finish`` later; ``finish`` happens once."""

    __slots__ = ("cache", "deadline", "detached", "finished", "output", "owned", "run_id", "status", "store", "workflow", "key", "team",
                 "meters", "span")

    def __init__(self, store: Any, run_id: str, workflow: str | None, key: str | None, team: str | None,
                 meters: tuple[Any, ...], owned: bool, deadline: float | None = None, cache: Any = None) -> None:
        self.store, self.run_id, self.workflow, self.key, self.team, self.meters = store, run_id, workflow, key, team, meters
        self.deadline, self.cache = deadline, cache
        self.owned = owned  # started here (else joined an enclosing run, which finishes itself)
        self.status, self.output = "ok", None
        self.detached = self.finished = False
        self.span: Any = None  # the run's span context (tracing on), re-entered by ``scope``

    def scope(self) -> AbstractContextManager[RunScope]:
        inner = spend_scope(store=self.store, run=self.run_id, workflow=self.workflow, key=self.key, team=self.team,
                            meters=self.meters, deadline=self.deadline, cache=self.cache)
        if self.span is None or not _telemetry.enabled():
            return inner  # tracing off (the default): the scope alone
        return _attached(self.span, inner)

    def detach(self) -> None:
        self.detached = True

    def finish(self, status: str | None = None, output: str | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        if self.owned and self.store is not None:
            self.store.finish_run(self.run_id, status=status or self.status, output=output if output is not None else self.output)


@contextmanager
def open_run(store: Any = None, workflow: str = "run", input: str | None = None, *, tags: Mapping[str, str] | None = None,
             meters: tuple[Any, ...] = (), join: bool = False, deadline: float | None = None,
             resume: str | None = None, cache: Any = None) -> Iterator[OpenRun]:
    """``with open_run(store, "triage", text, tags={"key": ...}) as run:`` — a run in ``store``, in scope.

    ``tags`` are stored with the run; ``key`` and ``team`` among them also enter the scope (budgets).
    With no store, ``join=True`` and a run already in scope, the block joins that run (which finishes
    itself); with no store and nothing to join, the run is in scope only (run budgets still apply).
    ``deadline`` (seconds from now) bounds every model call and fan-out in the block: a call after
    it is refused, one running at it is stopped, with ``DeadlineExceeded``. ``cache`` is the caller's
    response-cache opt-in (``turnout.policies.cache.CacheSettings``), read by ``Cached``.
    """
    t = tags or {}
    due = time.monotonic() + deadline if deadline is not None else None
    cur = _SCOPE.get()
    if join and store is None and cur is not None and cur.run is not None:
        run = OpenRun(cur.store, cur.run, workflow, t.get("key"), t.get("team"), meters, owned=False, deadline=due, cache=cache)
    elif store is not None and resume is not None:
        store.reopen_run(resume)
        run = OpenRun(store, resume, workflow, t.get("key"), t.get("team"), meters, owned=True, deadline=due, cache=cache)
    elif store is not None:
        run = OpenRun(store, store.start_run(workflow, input, tags=t), workflow, t.get("key"), t.get("team"), meters, owned=True,
                      deadline=due, cache=cache)
    else:
        run = OpenRun(None, secrets.token_hex(16), workflow, t.get("key"), t.get("team"), meters, owned=False, deadline=due, cache=cache)
    traced = run.owned and _telemetry.enabled()  # the span's attributes are only built for a span
    try:
        with _telemetry.span(f"run {workflow}", {"turnout.run_id": run.run_id, "turnout.workflow": workflow, "turnout.key": t.get("key"),
                                                  "turnout.team": t.get("team")}) if traced else nullcontext() as s:
            run.span = _telemetry.current() if s is not None else None
            with run.scope():
                yield run
            if s is not None:
                _telemetry.set_attributes(s, {"turnout.status": run.status})
    except BaseException:
        run.finish("error")
        raise
    if not run.detached:
        run.finish()
