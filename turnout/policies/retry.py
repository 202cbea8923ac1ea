"""Retrying: exponential backoff with jitter, Retry-After honoured, only retryable errors retried.

Strategies are small callables on a :class:`RetryState` that combine like tenacity's:
``stop_after_attempt(5) | stop_after_delay(30)``, ``wait_exponential(0.5) + wait_random(0, 0.2)``.
The success path costs one ``await`` and nothing else (tenacity's engine allocates a call state
and runs its action list on every call, which would eat most of our overhead budget — see
docs/benchmarks.md), so the loop lives here and only the strategy shape is borrowed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from .._types import Completion, Request, StreamChunk
from ..models.base import ChatModel
from .base import Opened, Wrapper, call_info, drive, open_stream

__all__ = [
    "RetryPolicy",
    "RetryState",
    "Retrying",
    "stop_after_attempt",
    "stop_after_delay",
    "wait_exponential",
    "wait_fixed",
    "wait_random",
]


@dataclass(frozen=True, slots=True)
class RetryState:
    attempt: int  # attempts made so far (1 after the first failure)
    elapsed: float  # seconds since the first attempt began
    error: BaseException


class _Stop:
    def __call__(self, s: RetryState) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __or__(self, other: _Stop) -> _Stop:
        return _StopAny(self, other)


@dataclass(frozen=True)
class _StopAny(_Stop):
    a: _Stop
    b: _Stop

    def __call__(self, s: RetryState) -> bool:
        return self.a(s) or self.b(s)


@dataclass(frozen=True)
class stop_after_attempt(_Stop):
    attempts: int

    def __call__(self, s: RetryState) -> bool:
        return s.attempt >= self.attempts


@dataclass(frozen=True)
class stop_after_delay(_Stop):
    seconds: float

    def __call__(self, s: RetryState) -> bool:
        return s.elapsed >= self.seconds


class _Wait:
    def __call__(self, s: RetryState) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __add__(self, other: _Wait) -> _Wait:
        return _WaitSum(self, other)


@dataclass(frozen=True)
class _WaitSum(_Wait):
    a: _Wait
    b: _Wait

    def __call__(self, s: RetryState) -> float:
        return self.a(s) + self.b(s)


@dataclass(frozen=True)
class wait_fixed(_Wait):
    seconds: float

    def __call__(self, s: RetryState) -> float:
        return self.seconds


@dataclass(frozen=True)
class wait_exponential(_Wait):
    """``initial * 2**(attempt-1)``, capped at ``max``; with ``jitter`` "full jitter" (uniform 0..that)."""

    initial: float = 0.5
    max: float = 30.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __call__(self, s: RetryState) -> float:
        d = min(self.max, self.initial * (2 ** (s.attempt - 1)))
        return self.rng.uniform(d / 2, d) if self.jitter else d


@dataclass(frozen=True)
class wait_random(_Wait):
    low: float = 0.0
    high: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __call__(self, s: RetryState) -> float:
        return self.rng.uniform(self.low, self.high)


def _retryable(e: BaseException) -> bool:
    return bool(getattr(e, "retryable", False))


@dataclass(frozen=True)
class RetryPolicy:
    stop: _Stop = field(default_factory=lambda: stop_after_attempt(3) | stop_after_delay(60))
    wait: _Wait = field(default_factory=wait_exponential)
    retry_on: Callable[[BaseException], bool] = _retryable
    honour_retry_after: bool = True
    max_retry_after: float = 60.0  # a Retry-After longer than this is not waited for: the error is raised

    def delay(self, s: RetryState) -> float | None:
        """Seconds to wait before the next attempt, or None to give up (pure: no clock, no sleep)."""
        if not self.retry_on(s.error) or self.stop(s):
            return None
        d = self.wait(s)
        ra = getattr(s.error, "retry_after", None)
        if self.honour_retry_after and ra is not None:
            if ra > self.max_retry_after:
                return None
            d = max(d, ra)
        return d


class Retrying(Wrapper):
    """Retry transient failures of ``inner``. ``sleep`` and ``clock`` are injectable for tests."""

    def __init__(
        self,
        inner: ChatModel,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock

    async def _next(self, err: BaseException, attempt: int, t0: float) -> None:
        d = self.policy.delay(RetryState(attempt, self.clock() - t0, err))
        if d is None:
            raise err
        info = call_info()
        if info is not None:
            info["retries"] = info.get("retries", 0) + 1
        await self.sleep(d)

    async def complete(self, request: Request) -> Completion:
        try:
            return await self.inner.complete(request)  # the fast path: no bookkeeping at all
        except Exception as e:
            err: Exception = e
        t0 = self.clock()
        attempt = 1
        while True:
            await self._next(err, attempt, t0)
            attempt += 1
            try:
                return await self.inner.complete(request)
            except Exception as e:
                err = e

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        """Retries only until the first chunk; after that an error reaches the caller."""
        t0 = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await open_stream(self.inner, request)
            except Exception as e:
                await self._next(e, attempt, t0)
