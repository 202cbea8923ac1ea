"""Policies are ChatModels that wrap a ChatModel, so they stack: ``Traced(Retrying(Limited(m)))``.

Call-scoped facts that inner layers learn (retries made, the fallback that answered) travel up to
``Traced`` through one context variable, not through the Completion or the request.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from typing import Any

from .._types import Completion, Price, Request, StreamChunk
from ..models.base import ChatModel

__all__ = ["NoTools", "Opened", "StreamEnd", "Wrapper", "call_info", "close_ends", "drive", "open_stream", "open_via_stream"]

_CALL_INFO: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("turnout_call_info", default=None)


def call_info() -> dict[str, Any] | None:
    """The annotations dict of the traced call in progress, or None outside a ``Traced`` call."""
    return _CALL_INFO.get()


# -- one stream driver for a policy stack -----------------------------------------------------------
# A policy acts on a stream before its first chunk (acquire, reserve, retry, fail over, refuse) and
# when it ends (settle, release, keep it in a cache) — not on each chunk. So instead of one async
# generator per layer, each relaying every chunk (~25 µs a stream a layer, measured: every real
# suspension passes through every frame), a policy's ``open_stream`` does its before-work, opens
# the inner stream to its first chunk and adds a ``StreamEnd`` for its end-work; one driver,
# ``drive``, relays the chunks of the innermost stream and calls the ends (``Traced`` adds its
# trace as the last end).

Opened = tuple[StreamChunk | None, AsyncIterator[StreamChunk], list["StreamEnd"]]


class StreamEnd:
    """What a policy does as a stream it opened goes on and ends: ``each(chunk)`` for every chunk
    (when ``each_chunk``), ``done(chunk)`` with the final chunk before it is handed on, ``close(error)``
    once at the very end, whatever happened (``error``: what stopped it, None when it ended or the
    caller stopped)."""

    each_chunk = False

    def each(self, chunk: StreamChunk) -> None:
        pass

    async def done(self, chunk: StreamChunk) -> None:
        pass

    async def close(self, error: BaseException | None) -> None:
        pass


async def _nothing() -> AsyncIterator[StreamChunk]:
    return
    yield  # pragma: no cover


async def open_stream(model: Any, request: Request) -> Opened:
    """``model``'s stream opened to its first chunk: ``(first or None, the rest, the ends to call)``.
    A model without ``open_stream`` (an adapter, a router) is streamed and its first chunk awaited."""
    op = getattr(model, "open_stream", None)
    if op is not None:
        return await op(request)  # type: ignore[no-any-return]
    return await open_via_stream(model, request)


async def open_via_stream(model: Any, request: Request) -> Opened:
    """``model.stream(request)`` opened to its first chunk (a layer that works on every chunk itself)."""
    agen = model.stream(request)
    try:
        first = await agen.__anext__()
    except StopAsyncIteration:
        await agen.aclose()
        return None, _nothing(), []
    except BaseException:
        await agen.aclose()
        raise
    return first, agen, []


async def close_ends(rest: AsyncIterator[StreamChunk], ends: list[StreamEnd], error: BaseException | None) -> None:
    """The end of an opened stream: the rest closed at once, then every end, innermost first."""
    try:
        await rest.aclose()  # type: ignore[attr-defined]
    finally:
        for e in ends:
            await e.close(error)


async def drive(opener: Any, request: Request) -> AsyncIterator[StreamChunk]:
    """The chunks of ``await opener(request)`` (an ``open_stream``), with its ends called: the one relay of a stack."""
    first, rest, ends = await opener(request)
    eachs = [e for e in ends if e.each_chunk]
    err: BaseException | None = None
    try:
        chunk = first
        while chunk is not None:
            for e in eachs:
                e.each(chunk)
            if chunk.done:
                for e in ends:
                    await e.done(chunk)
            yield chunk
            try:
                chunk = await rest.__anext__()
            except StopAsyncIteration:
                break
    except GeneratorExit:
        raise
    except BaseException as e:
        err = e
        raise
    finally:
        await close_ends(rest, ends, err)


def providers_of(model: Any) -> dict[str, tuple[str, str]]:
    """``{member name: (provider, the provider's model id)}`` for every adapter under a policy stack
    (through wrappers' ``inner`` and failover's ``models``): what a call's span says answered it."""
    out: dict[str, tuple[str, str]] = {}
    stack, seen = [model], set()
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        inner, members = getattr(m, "inner", None), getattr(m, "models", None)
        if inner is not None:
            stack.append(inner)
        elif isinstance(members, list):
            stack.extend(members)
        else:
            weights = getattr(m, "weights", None)
            model_id = getattr(m, "model", None) or getattr(weights, "name", None) or m.name
            out.setdefault(m.name, (str(getattr(m, "provider", None) or type(m).__name__.lower()), str(model_id)))
    return out


class Wrapper:
    """Base for policies: forwards everything to ``inner``; subclasses override what they change. A
    subclass that overrides ``stream`` overrides ``open_stream`` too (``drive`` it, or return
    ``open_via_stream(self, request)`` when its ``stream`` works on every chunk itself)."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def price(self) -> Price:
        return self.inner.price

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    async def complete(self, request: Request) -> Completion:
        return await self.inner.complete(request)

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return self.inner.stream(request)

    def open_stream(self, request: Request) -> Any:
        return open_stream(self.inner, request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class NoTools(Wrapper):
    """A model that does not take tools (catalog ``tools: false``): a request with tools is refused
    with ``ToolsNotSupported`` before anything is reserved or sent, so failover moves on (no cooldown)."""

    def _check(self, request: Request) -> None:
        if request.tools:
            from .._errors import ToolsNotSupported

            raise ToolsNotSupported("this model does not take tools (catalog: tools: false); the request has "
                                    f"{len(request.tools)}", model=self.inner.name)

    async def complete(self, request: Request) -> Completion:
        self._check(request)
        return await self.inner.complete(request)

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        self._check(request)
        return await open_stream(self.inner, request)
