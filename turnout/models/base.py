"""The two model interfaces every adapter, policy and fake implements."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._types import Completion, Price, Request, StreamChunk, ToolCalls, Usage

__all__ = ["ChatModel", "Embedder", "collect_stream", "own_token_counter"]


@runtime_checkable
class ChatModel(Protocol):
    """``complete`` returns one whole answer; ``stream`` yields deltas, the last chunk ``done=True``.

    ``name`` is the catalog name used in traces and errors; ``price`` the USD per 1M tokens used to
    fill ``Completion.cost_usd`` (adapters compute cost once, for every call).
    """

    name: str
    price: Price

    async def complete(self, request: Request) -> Completion: ...

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim), each row L2-normalised."""
        ...


async def collect_stream(stream: AsyncIterator[StreamChunk], model: str) -> Completion:
    """Drain a stream into a Completion: the text, and the tool calls assembled from their deltas."""
    t0 = time.perf_counter()
    parts: list[str] = []
    calls = ToolCalls()
    last: StreamChunk | None = None
    async for chunk in stream:
        parts.append(chunk.delta)
        if chunk.tool_calls:
            calls.add(chunk.tool_calls)
        last = chunk
    if last is None:
        return Completion("", model, "unknown", latency_s=time.perf_counter() - t0)
    return Completion(
        "".join(parts),
        last.model or model,
        last.finish_reason or "unknown",
        last.usage or Usage(),
        last.cost_usd,
        last.latency_s or time.perf_counter() - t0,
        tool_calls=calls.done() if calls else (),
    )


def own_token_counter(model: Any) -> Any:
    """The model's own ``count_tokens(text) -> int`` (``LocalLLM``'s tokenizer, a fake's estimate),
    looked up through policy wrappers such as ``Traced(Retrying(...))``; None when it has none."""
    seen = 0
    while model is not None and seen < 32:
        count = getattr(model, "count_tokens", None)
        if callable(count):
            return count
        model, seen = getattr(model, "inner", None), seen + 1
    return None
