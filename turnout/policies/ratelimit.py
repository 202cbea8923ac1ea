"""Limited: requests-per-minute and tokens-per-minute token buckets shared by every caller.

A bucket hands out *reservations*: a caller takes its tokens at once (the balance may go below
zero) and sleeps until the balance it took would have refilled. Callers are served in arrival
order, no lock or polling is needed on one event loop, and a burst of 100 callers is spread out
exactly at the configured rate. TPM reserves the request's estimate (prompt + max_tokens) and
settles to the real token count when the answer arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

from .._errors import ConfigError
from .._types import Completion, Request, StreamChunk
from ..models.base import ChatModel
from .base import Wrapper

__all__ = ["Capped", "Limited", "RateLimiter", "TokenBucket"]


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
    # (Limits shared across processes or replicas go through Redis — see the gateway issue.)
    def reserve(self, n: float) -> float:
        """Take ``n`` tokens now; return the seconds to wait before using them (0 if available)."""
        now = self.clock()
        t = self.tokens + (now - self.last) * self.rate
        if t > self.capacity:
            t = self.capacity
        self.last = now
        t -= n
        self.tokens = t
        return 0.0 if t >= 0 else -t / self.rate

    def refund(self, n: float) -> None:
        """Give back (n > 0) or take more (n < 0) tokens after the fact."""
        t = self.tokens + n
        self.tokens = t if t < self.capacity else self.capacity


class RateLimiter:
    """RPM and/or TPM limits for one model. Share one instance among all callers of that model.

    ``burst`` defaults to one second's worth of requests (smooth), at least 1.
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        burst: float | None = None,
        token_burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rpm is None and tpm is None:
            raise ConfigError("RateLimiter needs rpm=, tpm= or both")
        self.rpm, self.tpm = rpm, tpm
        self.requests = TokenBucket(rpm / 60.0, burst or max(1.0, rpm / 60.0), clock) if rpm else None
        self.tokens = TokenBucket(tpm / 60.0, token_burst or max(1.0, tpm / 60.0 * 10), clock) if tpm else None
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm}, tpm={self.tpm})"

    def reserve(self, est_tokens: int) -> float:
        """Reserve one request and ``est_tokens`` tokens; return the seconds to wait (pure, no sleep)."""
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.reserve(1)
        if self.tokens is not None:
            n = min(est_tokens, self.tokens.capacity)  # a single huge request must not wait forever
            wait = max(wait, self.tokens.reserve(n))
        return wait

    async def acquire(self, est_tokens: int) -> None:
        wait = self.reserve(est_tokens)
        if wait > 0:
            await self.sleep(wait)

    def settle(self, est_tokens: int, actual_tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.refund(min(est_tokens, self.tokens.capacity) - actual_tokens)


def _estimate(request: Request) -> int:
    chars = 0
    for m in request.messages:
        chars += len(m.content)
    return chars // 4 + 1 + (request.max_tokens or 256)  # the documented 4-characters-a-token estimate


class Limited(Wrapper):
    def __init__(self, inner: ChatModel, limiter: RateLimiter) -> None:
        super().__init__(inner)
        self.limiter = limiter

    async def complete(self, request: Request) -> Completion:
        lim = self.limiter
        est = _estimate(request) if lim.tokens is not None else 0
        wait = lim.reserve(est)  # no extra coroutine on the path where no wait is needed
        if wait > 0:
            await lim.sleep(wait)
        c = await self.inner.complete(request)
        if est:
            self.limiter.settle(est, c.usage.total_tokens)
        return c

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        est = _estimate(request) if self.limiter.tokens is not None else 0
        await self.limiter.acquire(est)
        async with aclosing(self.inner.stream(request)) as agen:
            async for chunk in agen:
                if chunk.done and est and chunk.usage is not None:
                    self.limiter.settle(est, chunk.usage.total_tokens)
                yield chunk


class Capped(Wrapper):
    """At most N calls in flight (``policies.max_concurrency``); one semaphore shared by every caller."""

    def __init__(self, inner: ChatModel, semaphore: asyncio.Semaphore) -> None:
        super().__init__(inner)
        self.semaphore = semaphore

    async def complete(self, request: Request) -> Completion:
        async with self.semaphore:
            return await self.inner.complete(request)

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        async with self.semaphore, aclosing(self.inner.stream(request)) as agen:
            async for chunk in agen:
                yield chunk
