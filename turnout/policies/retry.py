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
from typing import TypeVar

from .._types import Completion, Request, StreamChunk
from ..models.base import ChatModel
from .base import Opened, Wrapper, call_info, drive, open_stream

__all__ = [
    "RetryPolicy",
    "RetryState",
    "Retrying",
    "retry_after_failure",
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


T = TypeVar("T")


async def retry_after_failure(fn: Callable[[], Awaitable[T]], err: BaseException, policy: RetryPolicy, *,
                              sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.monotonic,
                              t0: float | None = None, on_retry: Callable[[], None] | None = None) -> T:
    """The retry loop, after a first attempt failed with ``err``: wait as ``policy`` says and call
    ``fn()`` again until it succeeds, or raise the last error when the policy gives up. ``t0`` is
    when the attempts started (default: now); ``on_retry`` is told of each retry. The first attempt
    stays with the caller, so a success costs one ``await`` and nothing else. Used by ``Retrying``
    (chat calls and stream opens) and by ``PolicyEmbedder`` (each batch)."""
    start = clock() if t0 is None else t0
    attempt = 1
    while True:
        d = policy.delay(RetryState(attempt, clock() - start, err))
        if d is None:
            raise err
        if on_retry is not None:
            on_retry()
        await sleep(d)
        attempt += 1
        try:
            return await fn()
        except Exception as e:
            err = e


def _count_retry() -> None:
    info = call_info()
    if info is not None:
        info["retries"] = info.get("retries", 0) + 1


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

    async def complete(self, request: Request) -> Completion:
        try:
            return await self.inner.complete(request)  # the fast path: no bookkeeping at all
        except Exception as e:
            err: Exception = e
        return await retry_after_failure(lambda: self.inner.complete(request), err, self.policy, sleep=self.sleep, clock=self.clock,
                                         on_retry=_count_retry)

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        """Retries only until the first chunk; after that an error reaches the caller."""
        t0 = self.clock()
        try:
            return await open_stream(self.inner, request)
        except Exception as e:
            err: Exception = e
        return await retry_after_failure(lambda: open_stream(self.inner, request), err, self.policy, sleep=self.sleep, clock=self.clock,
                                         t0=t0, on_retry=_count_retry)
