"""An embedder under the same policies as a chat model: compliance, budgets, rate limits, retries
and tracing, applied to every request it sends (one batch of texts).

``PolicyEmbedder(inner, ...)`` is what a catalog's ``embedders:`` entry builds
(``Catalog.embedder(name)``); a router on an HTTP encoder therefore never sends a data class its
endpoint may not receive, is charged to the budgets that apply (the catalog's, and the meters of
the call's scope: a gateway key's), is held to the endpoint's ``rpm``/``tpm``, retries transient
errors with the chat models' ``RetryPolicy``, and each request lands in the active run as a call
(model = the embedder's name, input tokens, cost) — so a run's cost includes its embeddings.

Per batch, in this order: the texts are scanned and refused or redacted (once, for the whole
call); the worst-case cost (the texts' UTF-8 bytes bound their tokens) is reserved on every
ledger; the rate limiter admits the batch; the request is sent, retried while the policy allows;
the reservation is settled with the tokens the endpoint reported (released on failure).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from .._scope import active_run, current_scope
from .._types import FREE, Price, Usage
from .compliance import AuditRecord, DataPolicy, audit, digest_texts, refuse
from .ledger import Hold, reserve_all, settle_all
from .retry import RetryPolicy, retry_after_failure
from .trace import CallEvent

__all__ = ["PolicyEmbedder", "token_bound"]


def token_bound(texts: Sequence[str]) -> int:
    """An upper bound on the input tokens of ``texts``: their UTF-8 bytes (a token covers at least one)."""
    return sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)


class PolicyEmbedder:
    """``inner`` (anything with ``name``, ``dim`` and ``async embed(texts)``; with
    ``embed_batch(texts) -> (rows, tokens)`` the reported tokens are charged) under the policies."""

    def __init__(self, inner: Any, *, name: str | None = None, price: Price | None = None, retry: RetryPolicy | None = None,
                 limiter: Any = None, spend: Any = None, policy: DataPolicy | None = None, data_classes: Sequence[str] = ("*",),
                 region: str = "", audit_sink: Callable[[AuditRecord], None] | None = None, batch_size: int | None = None,
                 concurrency: int | None = None, provider: str = "", label: str | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.name = name or inner.name  # embedding caches are keyed by it: the encoder's own name by default
        self.price = price or getattr(inner, "price", FREE)
        self.retry, self.limiter, self.spend = retry, limiter, spend
        self.policy, self.data_classes, self.region, self.audit_sink = policy, tuple(data_classes), region, audit_sink
        self.batch_size = batch_size or getattr(inner, "batch_size", 128)
        self.concurrency = concurrency or getattr(inner, "concurrency", 4)
        self.provider = provider
        self.label = label or self.name  # the name its calls are recorded (and budgets charged) under: the catalog's
        self.sleep, self.clock = sleep, clock

    def __repr__(self) -> str:
        return f"PolicyEmbedder({self.inner!r})"

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    @property
    def truncated(self) -> Any:
        return getattr(self.inner, "truncated", None)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    # -- compliance: the whole call, before anything is sent ----------------------------------------
    def admit(self, texts: Sequence[str]) -> list[str]:
        """The texts as they may be sent: unchanged, or with the classes the policy redacts removed;
        ``DataClassNotAllowed`` when a text carries a class this encoder may not receive."""
        if self.policy is None:
            return list(texts)
        det, out, found = self.policy.detector, [], set()
        for t in texts:
            classes = det.classes(t)
            blocked = self.policy.blocked(self.data_classes, self.region, classes) if classes else frozenset()
            if blocked and blocked <= self.policy.redact:
                t = det.redact(t, blocked)
            elif blocked:
                refuse(self.policy, self.name, self.data_classes, self.region, classes, blocked, digest_texts(texts), self.audit_sink)
            found |= classes
            out.append(t)
        if found:
            redacted = out != list(texts)
            audit(AuditRecord(self.name, "redacted" if redacted else "sent", tuple(sorted(found)), digest_texts(out), "", time.time()),
                  self.audit_sink)
        return out

    # -- one call -----------------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return (await self.embed_counted(texts))[0]

    async def embed_counted(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """The rows and the input tokens the endpoint reported for them (0 where it reports none)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        sendable = self.admit(texts)
        if not sendable:
            return np.zeros((0, self.inner.dim or 0), dtype=np.float32), 0
        sem = asyncio.Semaphore(self.concurrency)

        async def one(part: list[str]) -> tuple[np.ndarray, int]:
            async with sem:
                return await self._batch(part)

        parts = [sendable[i : i + self.batch_size] for i in range(0, len(sendable), self.batch_size)]
        done = await asyncio.gather(*(one(p) for p in parts))
        return np.concatenate([rows for rows, _ in done]), sum(n for _, n in done)

    async def _batch(self, part: list[str]) -> tuple[np.ndarray, int]:
        bound = token_bound(part)
        holds = await self._reserve(self.price.input_per_m * bound / 1e6)
        t0, wall = time.perf_counter(), time.time()
        retries = 0
        try:
            if self.limiter is not None:
                await self.limiter.acquire(bound)
            rows, tokens, retries = await self._send(part)
        except BaseException as e:
            await settle_all(holds, None)
            self._record(wall, t0, 0, retries, e)
            raise
        cost = self.price.input_per_m * tokens / 1e6
        await settle_all(holds, cost)
        if self.limiter is not None:
            await self.limiter.settle(bound, tokens or bound)
        self._record(wall, t0, tokens, retries, None, cost)
        return rows, tokens

    async def _reserve(self, amount: float) -> Hold:
        ledgers = (*((self.spend,) if self.spend is not None else ()), *current_scope().meters)
        return await reserve_all(ledgers, amount, model=self.label)

    async def _send(self, part: list[str]) -> tuple[np.ndarray, int, int]:
        """(rows, reported tokens, retries): the request, retried as the policy allows."""
        batch = getattr(self.inner, "embed_batch", None)

        async def once() -> tuple[np.ndarray, int]:
            return await batch(part) if batch is not None else (await self.inner.embed(part), 0)

        t0 = self.clock()
        try:
            return (*await once(), 0)
        except Exception as e:
            if self.retry is None:
                raise
            err: Exception = e
        retries = 0

        def count() -> None:
            nonlocal retries
            retries += 1

        rows, tokens = await retry_after_failure(once, err, self.retry, sleep=self.sleep, clock=self.clock, t0=t0, on_retry=count)
        return rows, tokens, retries

    def _record(self, wall: float, t0: float, tokens: int, retries: int, err: BaseException | None, cost: float = 0.0) -> None:
        a = active_run()
        if a is None:
            return
        ev = CallEvent(self.label, wall, time.perf_counter() - t0, err is None, False, Usage(tokens, 0), cost,
                       "embedding" if err is None else None, type(err).__name__ if err is not None else None,
                       str(err)[:300] if err is not None else None, retries)
        ev.provider, ev.provider_model = self.provider, getattr(self.inner, "model", self.name)
        a[0].record(ev)

