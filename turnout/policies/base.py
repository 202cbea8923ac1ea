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

__all__ = ["NoTools", "Wrapper", "call_info"]

_CALL_INFO: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("turnout_call_info", default=None)


def call_info() -> dict[str, Any] | None:
    """The annotations dict of the traced call in progress, or None outside a ``Traced`` call."""
    return _CALL_INFO.get()


async def relay(first: StreamChunk, rest: AsyncIterator[StreamChunk]) -> AsyncIterator[StreamChunk]:
    """A stream whose first chunk was awaited already (to fail over or retry before any token):
    ``first``, then the rest, closing ``rest`` at once when the caller stops, not when it is collected."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


class Wrapper:
    """Base for policies: forwards everything to ``inner``; subclasses override what they change."""

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

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        self._check(request)
        async for chunk in self.inner.stream(request):
            yield chunk
