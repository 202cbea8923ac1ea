"""Limited: requests-per-minute and tokens-per-minute token buckets shared by every caller.

A bucket hands out *reservations*: a caller takes its tokens at once (the balance may go below
zero) and sleeps until the balance it took would have refilled. Callers are served in arrival
order, no lock or polling is needed on one event loop, and a burst of 100 callers is spread out
exactly at the configured rate. TPM reserves the request's estimate (prompt + max_tokens) and
settles to the real token count when the answer arrives.

``RateLimiter`` is the one ``Limiter`` in turnout — a catalog model's ``rate_limit``, a gateway
key's rpm/tpm, a Ray batch's cluster-wide rates — over one of three ``Buckets`` backends:
``MemoryBuckets`` (one process), ``RedisBuckets`` (``turnout.policies.shared``: every replica on
one Redis) and the Ray gate (every worker of a batch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from .._errors import ConfigError
from .._types import Completion, Request, StreamChunk
from ..models.base import ChatModel
from .base import Opened, StreamEnd, Wrapper, drive, open_stream

__all__ = ["Buckets", "Capped", "Limited", "Limiter", "MemoryBuckets", "RateLimiter", "TokenBucket"]


class TokenBucket:
    def __init__(self, rate_per_s: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ConfigError(f"a rate limit needs a positive rate and burst (got rate={rate_per_s}, burst={capacity})")
        self.rate = rate_per_s
        self.capacity = capacity
        self.clock = clock
        self.tokens = capacity
        self.last = clock()

    # No lock: a bucket belongs to one event loop, where these few lines cannot interleave.
    def _refill(self, now: float | None) -> float:
        now = self.clock() if now is None else now
        t = self.tokens + max(0.0, now - self.last) * self.rate
        self.last = max(self.last, now)
        return t if t < self.capacity else self.capacity

    def reserve(self, n: float, now: float | None = None) -> float:
        """Take ``n`` tokens now; return the seconds to wait before using them (0 if available)."""
        t = self._refill(now) - n
        self.tokens = t
        return 0.0 if t >= 0 else -t / self.rate

    def try_take(self, n: float, now: float | None = None) -> float:
        """Take ``n`` tokens if they are there (0.0); else take nothing and return the seconds until they are."""
        t = self.tokens = self._refill(now)
        if t >= n:
            self.tokens = t - n
            return 0.0
        return (n - t) / self.rate

    def refund(self, n: float) -> None:
        """Give back (n > 0) or take more (n < 0) tokens after the fact."""
        t = self.tokens + n
        self.tokens = t if t < self.capacity else self.capacity


class Buckets(Protocol):
    """Where rate limiters keep their token buckets (memory, Redis, the Ray gate). ``now`` is the
    caller's clock (wall time when the buckets are shared between processes)."""

    async def take(self, bucket: str, n: float, rate: float, capacity: float, now: float, *, wait: bool) -> float:
        """``wait=True``: take ``n`` now (the balance may go below zero) and return the seconds until it
        would have refilled — callers queue in arrival order; ``wait=False``: take ``n`` only if it is
        there (0.0), else take nothing and return the seconds until it will be."""
        ...

    async def give(self, bucket: str, n: float, rate: float, capacity: float, now: float) -> None:
        """Give back (n > 0) or take more (n < 0) after the fact (TPM settling to real usage)."""
        ...


class MemoryBuckets:
    """Token buckets in this process."""

    def __init__(self) -> None:
        self._b: dict[str, TokenBucket] = {}

    def _bucket(self, bucket: str, rate: float, capacity: float, now: float) -> TokenBucket:
        b = self._b.get(bucket)
        if b is None:
            b = self._b[bucket] = TokenBucket(rate, capacity, clock=lambda: now)
        else:  # the same limit seen by another caller (a catalog copy may declare it anew)
            b.rate, b.capacity = rate, capacity
        return b

    def take_now(self, bucket: str, n: float, rate: float, capacity: float, now: float, wait: bool) -> float:
        b = self._bucket(bucket, rate, capacity, now)
        return b.reserve(n, now) if wait else b.try_take(n, now)

    def give_now(self, bucket: str, n: float, rate: float, capacity: float, now: float) -> None:
        self._bucket(bucket, rate, capacity, now).refund(n)

    async def take(self, bucket: str, n: float, rate: float, capacity: float, now: float, *, wait: bool) -> float:
        return self.take_now(bucket, n, rate, capacity, now, wait)

    async def give(self, bucket: str, n: float, rate: float, capacity: float, now: float) -> None:
        self.give_now(bucket, n, rate, capacity, now)

    async def level(self, bucket: str, rate: float, capacity: float, now: float) -> float:
        """The tokens in the bucket now (refilled; nothing taken)."""
        b = self._bucket(bucket, rate, capacity, now)
        b.tokens = b._refill(now)
        return b.tokens


@runtime_checkable
class Limiter(Protocol):
    """A rate limit: ``acquire`` waits its turn (a model call), ``admit`` refuses instead of waiting (a
    gateway request: None, or which limit and the seconds to retry after), ``settle`` corrects the
    token estimate to the real count."""

    async def acquire(self, est_tokens: int) -> None: ...

    async def admit(self, est_tokens: int) -> tuple[str, float] | None: ...

    async def settle(self, est_tokens: int, actual_tokens: int) -> None: ...


class RateLimiter:
    """RPM and/or TPM token buckets: the one ``Limiter``. Share one instance among all callers of a
    model; give several processes the same ``buckets`` (``RedisBuckets``) and ``name`` to share one limit.

    ``burst`` defaults to one second's worth of requests (smooth), at least 1; ``token_burst`` to ten
    seconds' worth of tokens.
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        burst: float | None = None,
        token_burst: float | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        buckets: Any = None,
        name: str = "",
    ) -> None:
        if rpm is None and tpm is None:
            raise ConfigError("RateLimiter needs rpm=, tpm= or both")
        self.rpm, self.tpm = rpm, tpm
        self.requests = (rpm / 60.0, burst or max(1.0, rpm / 60.0)) if rpm else None  # (rate per s, capacity)
        self.tokens = (tpm / 60.0, token_burst or max(1.0, tpm / 60.0 * 10)) if tpm else None
        for rate, cap in filter(None, (self.requests, self.tokens)):
            if rate <= 0 or cap <= 0:
                raise ConfigError(f"a rate limit needs a positive rate and burst (got rate={rate}, burst={cap})")
        self._clock = clock
        self.share(buckets if buckets is not None else MemoryBuckets())
        self.sleep = sleep
        self.name = name or f"limiter:{id(self):x}"
        self._rk, self._tk = f"{self.name}:rpm", f"{self.name}:tpm"  # its buckets' names

    def share(self, buckets: Any) -> None:
        """Keep the buckets in ``buckets`` from now on (e.g. a ``RedisBuckets`` every replica uses)."""
        self.buckets = buckets
        self.local = isinstance(buckets, MemoryBuckets)  # the in-process buckets are also reached without a coroutine
        # wall time when shared (processes' monotonic clocks differ), monotonic in one process
        self.clock = self._clock or (time.monotonic if self.local else time.time)

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm}, tpm={self.tpm})"

    def _n(self, est_tokens: int) -> float:
        return min(est_tokens, self.tokens[1]) if self.tokens else 0  # a single huge request must not wait forever

    def reserve_now(self, est_tokens: int) -> float | None:
        """``acquire`` without awaiting, for in-process buckets: the seconds to sleep (None: shared
        buckets, use ``await acquire``). The hot path of ``Limited``: no coroutine unless it waits."""
        if not self.local:
            return None
        now, wait, b = self.clock(), 0.0, self.buckets
        if self.requests is not None:
            wait = b.take_now(self._rk, 1, *self.requests, now, True)
        if self.tokens is not None:
            wait = max(wait, b.take_now(self._tk, self._n(est_tokens), *self.tokens, now, True))
        return wait

    def settle_now(self, est_tokens: int, actual_tokens: int) -> bool:
        """``settle`` without awaiting where the buckets are in-process (False: use ``await settle``)."""
        if not self.local:
            return False
        if self.tokens is not None:
            self.buckets.give_now(self._tk, self._n(est_tokens) - actual_tokens, *self.tokens, self.clock())
        return True

    async def acquire(self, est_tokens: int) -> None:
        """Reserve one request and ``est_tokens`` tokens; sleep until they are available."""
        wait = self.reserve_now(est_tokens)
        if wait is None:  # shared buckets: the same two takes, awaited
            now, wait = self.clock(), 0.0
            if self.requests is not None:
                wait = await self.buckets.take(self._rk, 1, *self.requests, now, wait=True)
            if self.tokens is not None:
                wait = max(wait, await self.buckets.take(self._tk, self._n(est_tokens), *self.tokens, now, wait=True))
        if wait > 0:
            await self.sleep(wait)

    async def admit(self, est_tokens: int) -> tuple[str, float] | None:
        """Take one request and the tokens only if both are there; else take nothing and return
        ``("requests" | "tokens", seconds until they are)``."""
        now = self.clock()
        if self.requests is not None:
            wait = await self.buckets.take(self._rk, 1, *self.requests, now, wait=False)
            if wait > 0:
                return "requests", wait
        if self.tokens is not None:
            wait = await self.buckets.take(self._tk, self._n(est_tokens), *self.tokens, now, wait=False)
            if wait > 0:
                if self.requests is not None:
                    await self.buckets.give(self._rk, 1, *self.requests, now)
                return "tokens", wait
        return None

    async def remaining(self) -> dict[str, tuple[float, float, float]]:
        """``{"requests" | "tokens": (limit per minute, left now, seconds until full)}`` — what the
        gateway's ``x-ratelimit-*`` headers say. Buckets without ``level`` report nothing."""
        level = getattr(self.buckets, "level", None)
        if level is None:
            return {}
        now, out = self.clock(), {}
        for what, per_min, spec, bucket in (("requests", self.rpm, self.requests, self._rk), ("tokens", self.tpm, self.tokens, self._tk)):
            if spec is not None and per_min is not None:
                left = max(0.0, await level(bucket, *spec, now))
                out[what] = (per_min, left, (spec[1] - left) / spec[0])
        return out

    async def settle(self, est_tokens: int, actual_tokens: int) -> None:
        if self.tokens is not None and not self.settle_now(est_tokens, actual_tokens):
            await self.buckets.give(self._tk, self._n(est_tokens) - actual_tokens, *self.tokens, self.clock())


def _estimate(request: Request) -> int:
    # the documented 4-characters-a-token estimate; prompt_chars counts tool definitions and calls
    return request.prompt_chars // 4 + 1 + (request.max_tokens or 256)


class Limited(Wrapper):
    def __init__(self, inner: ChatModel, limiter: RateLimiter) -> None:
        super().__init__(inner)
        self.limiter = limiter

    async def complete(self, request: Request) -> Completion:
        lim = self.limiter
        est = _estimate(request) if lim.tokens is not None else 0
        wait = lim.reserve_now(est)  # in-process buckets: no extra coroutine on the path where no wait is needed
        if wait is None:
            await lim.acquire(est)
        elif wait > 0:
            await lim.sleep(wait)
        c = await self.inner.complete(request)
        if est and not lim.settle_now(est, c.usage.total_tokens):
            await lim.settle(est, c.usage.total_tokens)
        return c

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        lim = self.limiter
        est = _estimate(request) if lim.tokens is not None else 0
        wait = lim.reserve_now(est)  # as ``complete``: no extra coroutine where no wait is needed
        if wait is None:
            await lim.acquire(est)
        elif wait > 0:
            await lim.sleep(wait)
        first, rest, ends = await open_stream(self.inner, request)
        if est:  # the tokens estimated are corrected to the real count at the final chunk
            ends.append(_SettleTokens(self.limiter, est))
        return first, rest, ends


class Capped(Wrapper):
    """At most N calls in flight (``policies.max_concurrency``); one semaphore shared by every caller."""

    def __init__(self, inner: ChatModel, semaphore: asyncio.Semaphore) -> None:
        super().__init__(inner)
        self.semaphore = semaphore

    async def complete(self, request: Request) -> Completion:
        async with self.semaphore:
            return await self.inner.complete(request)

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        await self.semaphore.acquire()
        try:
            first, rest, ends = await open_stream(self.inner, request)
        except BaseException:
            self.semaphore.release()
            raise
        ends.append(_Release(self.semaphore))  # held until the stream ends, however it ends
        return first, rest, ends


class _SettleTokens(StreamEnd):
    __slots__ = ("est", "limiter")

    def __init__(self, limiter: Any, est: int) -> None:
        self.limiter, self.est = limiter, est

    async def done(self, chunk: StreamChunk) -> None:
        if chunk.usage is not None and not self.limiter.settle_now(self.est, chunk.usage.total_tokens):
            await self.limiter.settle(self.est, chunk.usage.total_tokens)


class _Release(StreamEnd):
    __slots__ = ("semaphore",)

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore

    async def close(self, error: BaseException | None) -> None:
        self.semaphore.release()
