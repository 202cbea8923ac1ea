"""Traced: one event per call into a sink (in memory now; the persistent store plugs in here).

Events carry model, timing, tokens, cost, outcome, retries and the fallback that answered —
never prompt text, never keys. ``request_tags`` come from ``Request.metadata``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _telemetry
from .._errors import DeadlineExceeded
from .._scope import active_run, current_scope
from .._types import Completion, Request, StreamChunk, Usage
from ..models.base import ChatModel
from .base import _CALL_INFO, Opened, StreamEnd, Wrapper, drive, open_stream, open_via_stream, providers_of

__all__ = ["CallEvent", "MemorySink", "TraceSink", "Traced"]


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~2 µs more per call on the hot path
class CallEvent:
    model: str
    started_at: float  # unix time
    latency_s: float
    ok: bool
    stream: bool = False
    usage: Usage = Usage()
    cost_usd: float = 0.0
    finish_reason: str | None = None
    error_type: str | None = None
    error: str | None = None
    retries: int = 0
    fallback: str | None = None  # the model that answered when it was not the first choice
    tags: Mapping[str, str] = field(default_factory=dict)
    tools: tuple[str, ...] = ()  # the tools the answer called, by name (never their arguments)
    cached: bool = False  # answered from the response cache: no tokens spent, cost 0
    saved_usd: float = 0.0  # what the cached answer cost when it was made
    provider: str = ""  # who answered: the API it speaks (openai, anthropic, llama.cpp; gen_ai.system in traces)
    provider_model: str = ""  # ... and its model id there (gen_ai.request.model), besides ``model``, the catalog name


_NO_USAGE = Usage()


class TraceSink(Protocol):
    def record(self, event: CallEvent) -> None: ...


class MemorySink:
    """Keeps the last ``maxlen`` events in memory, with simple totals."""

    def __init__(self, maxlen: int | None = 100_000) -> None:
        self.events: deque[CallEvent] = deque(maxlen=maxlen)

    def record(self, event: CallEvent) -> None:
        self.events.append(event)

    def __len__(self) -> int:
        return len(self.events)

    def totals(self) -> dict[str, Any]:
        ev = list(self.events)
        return {
            "calls": len(ev),
            "errors": sum(1 for e in ev if not e.ok),
            "input_tokens": sum(e.usage.input_tokens for e in ev),
            "output_tokens": sum(e.usage.output_tokens for e in ev),
            "cost_usd": sum(e.cost_usd for e in ev),
            "retries": sum(e.retries for e in ev),
        }


class _NoSink:
    def record(self, event: CallEvent) -> None:
        pass


class StreamClosed(Exception):
    """What a trace records (error_type) for a stream its caller closed before the final chunk."""


class Traced(Wrapper):
    """One ``CallEvent`` per call into ``sink`` — and, with ``attribute`` (the default), into the
    store of the active run (``with store.run(...)``) unless the sink already writes to that store
    (it is the store, or a ``Tee`` holding it), so calls are attributed without wiring and recorded
    once. ``attribute=False`` is for a second trace around an already traced model (a workflow
    branch's meter): it feeds its sink only."""

    def __init__(self, inner: ChatModel, sink: TraceSink | None = None, *, attribute: bool = True) -> None:
        super().__init__(inner)
        self.sink: TraceSink = sink if sink is not None else _NoSink()
        self.attribute = attribute
        self._writes_to = (self.sink, *getattr(self.sink, "sinks", ()))

    def _emit(self, event: CallEvent) -> None:
        ids = self.__dict__.get("_ids")
        if ids is None:
            ids = self._ids = providers_of(self.inner)
        event.provider, event.provider_model = ids.get(event.fallback or event.model) or next(iter(ids.values()), ("turnout", event.model))
        self.sink.record(event)
        if self.attribute and _telemetry.enabled():  # attribute=False is a meter over a model traced already
            _telemetry.call(event, event.provider, event.provider_model)
        if self.attribute:
            a = active_run()
            if a is not None and not any(s is a[0] for s in self._writes_to):
                a[0].record(event)

    def _event(self, request: Request, t0: float, wall: float, info: dict[str, Any], *, ok: bool, stream: bool,
               c: Completion | StreamChunk | None = None, err: BaseException | None = None, tools: tuple[str, ...] = ()) -> CallEvent:
        if err is None and c is not None:
            ev = CallEvent(self.inner.name, wall, time.perf_counter() - t0, ok, stream, c.usage or _NO_USAGE, c.cost_usd,
                           c.finish_reason, None, None, info.get("retries", 0), info.get("fallback"), request.metadata,
                           tools or (tuple(t.name for t in c.tool_calls if t.name) if c.tool_calls else ()))
            if "cached" in info:  # answered from the response cache: nothing was spent
                ev.usage, ev.cost_usd, ev.cached, ev.saved_usd = _NO_USAGE, 0.0, True, info["cached"]
            return ev
        return CallEvent(
            self.inner.name, wall, time.perf_counter() - t0, ok, stream, _NO_USAGE, 0.0, None,
            type(err).__name__ if err is not None else None, str(err)[:300] if err is not None else None,
            info.get("retries", 0), info.get("fallback"), request.metadata, tools,
        )

    async def complete(self, request: Request) -> Completion:
        info: dict[str, Any] = {}
        token = _CALL_INFO.set(info)
        wall, t0 = time.time(), time.perf_counter()
        due = current_scope().deadline
        try:
            c = await (self.inner.complete(request) if due is None else self._before(request, due))
        except BaseException as e:
            self._emit(self._event(request, t0, wall, info, ok=False, stream=False, err=e))
            raise
        finally:
            _CALL_INFO.reset(token)
        self._emit(self._event(request, t0, wall, info, ok=True, stream=False, c=c))
        return c

    async def _before(self, request: Request, due: float) -> Completion:
        """A call in a run with a deadline: refused after it, stopped at it (the adapter's own timeout too)."""
        left = due - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the run's deadline passed before this call", model=self.inner.name)
        try:
            async with asyncio.timeout(left):
                return await self.inner.complete(request.with_(timeout=min(request.timeout or left, left)))
        except TimeoutError:
            raise DeadlineExceeded(f"the run's deadline passed during this call ({left:.2f} s were left)", model=self.inner.name) from None

    def open_stream(self, request: Request) -> Any:
        return open_via_stream(self, request)  # a traced stream is traced: through its own driver

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        """The inner layers' ``open_stream`` opens the stream to its first chunk (retries, failover,
        reservations happen there); ``drive`` relays the innermost stream's chunks and calls each
        layer's ``StreamEnd``, this trace's last (``policies.base``)."""
        return drive(self._open, request)

    async def _open(self, request: Request) -> Opened:
        trace = _Trace(self, request, current_scope().deadline)
        if trace.due is not None:  # each chunk must come before the run's deadline; the adapter stops at it too
            left = trace.due - time.monotonic()
            if left <= 0:
                err = DeadlineExceeded("the run's deadline passed before this call", model=self.inner.name)
                trace.record(err)
                raise err
            trace.request = request.with_(timeout=min(request.timeout or left, left))
        # inner layers report retries, the fallback that answered and a cache hit into ``info``, all
        # before the first chunk: the context variable is set for the opening only
        token = _CALL_INFO.set(trace.info)
        try:
            first, rest, ends = await open_stream(self.inner, trace.request)
        except BaseException as e:
            trace.record(e)
            raise
        finally:
            _CALL_INFO.reset(token)
        trace.seen = first is not None
        ends.append(trace)  # the last end: the call is recorded after the others settled and kept it
        return first, rest, ends


class _Trace(StreamEnd):
    """One streamed call's ``CallEvent``: recorded at the final chunk before it is handed on (a caller
    may stop right after it), else when the stream ends — failed, or cut by its caller."""

    each_chunk = True
    __slots__ = ("called", "due", "emitted", "info", "owner", "request", "seen", "t0", "wall")

    def __init__(self, owner: Traced, request: Request, due: float | None) -> None:
        self.owner, self.request, self.due = owner, request, due
        self.info: dict[str, Any] = {}
        self.wall, self.t0 = time.time(), time.perf_counter()
        self.called: list[str] = []
        self.emitted = self.seen = False

    def record(self, err: BaseException | None, chunk: StreamChunk | None = None) -> None:
        self.emitted = True
        o = self.owner
        o._emit(o._event(self.request, self.t0, self.wall, self.info, ok=chunk is not None, stream=True, c=chunk, err=err,
                         tools=tuple(self.called)))

    def each(self, chunk: StreamChunk) -> None:
        if chunk.tool_calls:
            self.called += [d.name for d in chunk.tool_calls if d.name]
        if self.due is not None and time.monotonic() >= self.due:
            raise DeadlineExceeded("the run's deadline passed during this stream", model=self.owner.inner.name)

    async def done(self, chunk: StreamChunk) -> None:
        self.record(None, chunk)

    async def close(self, error: BaseException | None) -> None:
        if not self.emitted:  # failed, or ended without its final chunk, or the caller stopped part way: a cut call
            self.record(error if error is not None else (StreamClosed("the caller closed the stream before its end") if self.seen else None))
