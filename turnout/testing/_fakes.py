"""Deterministic fakes at the model interface: scripted replies, a function model, an embedder."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import ConfigError
from .._types import FREE, Completion, Price, Request, StreamChunk, ToolCall, ToolCallDelta, Usage, estimate_tokens

__all__ = ["FakeEmbedder", "FunctionModel", "ScriptedModel"]

Reply = str | Completion | BaseException | Callable[[Request], Any]


def _last_user(req: Request) -> str:
    for m in reversed(req.messages):
        if m.role == "user":
            return m.content
    return req.messages[-1].content


class _FakeBase:
    name: str
    price: Price
    latency: float
    provider = "turnout.testing"  # gen_ai.system of a fake's calls in traces

    @staticmethod
    def count_tokens(text: str) -> int:
        """A fake's tokenizer: the estimate its usage is computed with (so budgets reserve exactly)."""
        return estimate_tokens(text)

    def __init__(self, name: str, price: Price, latency: float) -> None:
        self.name = name
        self.price = price
        self.latency = latency
        self.history: list[Request] = []
        self.active = 0  # calls in flight now
        self.max_active = 0  # the most calls ever in flight at once

    async def _reply(self, request: Request) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _to_completion(self, out: Any, request: Request, t0: float) -> Completion:
        if isinstance(out, Completion):
            return out
        if isinstance(out, ToolCall) or (isinstance(out, (list, tuple)) and out and all(isinstance(c, ToolCall) for c in out)):
            calls = (out,) if isinstance(out, ToolCall) else tuple(out)
            usage = Usage(estimate_tokens(request.prompt_chars), estimate_tokens(sum(len(c.arguments) for c in calls)))
            return Completion("", self.name, "tool_calls", usage, self.price.cost(usage), time.perf_counter() - t0, tool_calls=calls)
        text = str(out)
        usage = Usage(estimate_tokens(request.prompt_chars), estimate_tokens(text) if text else 0)
        return Completion(text, self.name, "stop", usage, self.price.cost(usage), time.perf_counter() - t0)

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        self.history.append(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            out = await self._reply(request)
            if isinstance(out, BaseException):
                raise out
            return self._to_completion(out, request, t0)
        finally:
            self.active -= 1

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        c = await self.complete(request)
        for piece in re.findall(r"\S+\s*|\s+", c.text):
            yield StreamChunk(piece, model=self.name)
        for i, t in enumerate(c.tool_calls):
            yield StreamChunk("", model=self.name, tool_calls=(ToolCallDelta(i, t.id, t.name, t.arguments),))
        yield StreamChunk("", True, c.finish_reason, c.usage, c.cost_usd, c.latency_s, self.name)

    async def aclose(self) -> None:
        return None

    @property
    def calls(self) -> int:
        return len(self.history)


class ScriptedModel(_FakeBase):
    """Replies from a script. Records every request in ``.history``.

    - ``replies={"regex": reply, ...}``: the first pattern found in the last user message wins;
    - ``queue=[reply, ...]``: replies in order (checked before patterns);
    - ``default=``: used when nothing matches (else a ConfigError names the prompt).

    A reply is a string, a Completion, a ``ToolCall`` or a list of them (a turn that calls tools),
    an exception (raised), or a callable of the Request (sync or async) returning one of those.
    """

    def __init__(
        self,
        replies: Mapping[str, Reply] | None = None,
        *,
        queue: Iterable[Reply] = (),
        default: Reply | None = None,
        name: str = "scripted",
        price: Price = FREE,
        latency: float = 0.0,
    ) -> None:
        super().__init__(name, price, latency)
        self.patterns = [(re.compile(p, re.I), r) for p, r in (replies or {}).items()]
        self.queue: deque[Reply] = deque(queue)
        self.default = default

    def enqueue(self, *replies: Reply) -> None:
        self.queue.extend(replies)

    async def _reply(self, request: Request) -> Any:
        if self.queue:
            r: Reply | None = self.queue.popleft()
        else:
            text = _last_user(request)
            r = next((rep for pat, rep in self.patterns if pat.search(text)), self.default)
            if r is None:
                raise ConfigError(f"ScriptedModel {self.name!r} has no reply for {text[:80]!r}")
        if callable(r) and not isinstance(r, BaseException):
            r = r(request)
            if inspect.isawaitable(r):
                r = await r
        return r


class FunctionModel(_FakeBase):
    """A model whose answer is ``fn(request)`` (sync or async), e.g. a calculator for tests."""

    def __init__(
        self,
        fn: Callable[[Request], str | Completion | Awaitable[str | Completion]],
        *,
        name: str = "function",
        price: Price = FREE,
        latency: float = 0.0,
    ) -> None:
        super().__init__(name, price, latency)
        self.fn = fn

    async def _reply(self, request: Request) -> Any:
        out = self.fn(request)
        if inspect.isawaitable(out):
            out = await out
        return out


_TOKEN = re.compile(r"[a-z0-9]+")


class FakeEmbedder:
    """Deterministic bag-of-words vectors (hashed words and character trigrams), L2-normalised.

    Texts sharing words are similar, so routing tests behave like they would with a real encoder,
    with no model and in microseconds. ``calls`` counts embed() calls, ``texts`` counts texts.
    """

    def __init__(self, dim: int = 256, *, name: str = "fake-embedder") -> None:
        self.dim = dim
        self.name = name
        self.calls = 0
        self.texts = 0

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for w in _TOKEN.findall(text.lower()):
            feats = [w] + [w[i : i + 3] for i in range(max(1, len(w) - 2))]
            for j, f in enumerate(feats):
                h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
                v[h % self.dim] += (1.0 if j == 0 else 0.3) * (1 if (h >> 32) & 1 else -1)
        n = float(np.linalg.norm(v))
        return v / n if n else v

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        self.calls += 1
        self.texts += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vec(t) for t in texts])
