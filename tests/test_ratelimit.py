"""Limited/RateLimiter: RPM and TPM hold across many concurrent callers sharing one limiter."""

from __future__ import annotations

import asyncio

import pytest

from turnout import ConfigError, Request
from turnout.policies import Limited, RateLimiter
from turnout.policies.ratelimit import TokenBucket
from turnout.testing import ScriptedModel


def test_bucket_reservations_queue_in_arrival_order():
    now = [0.0]
    b = TokenBucket(rate_per_s=10, capacity=2, clock=lambda: now[0])
    waits = [b.reserve(1) for _ in range(5)]
    assert waits == pytest.approx([0, 0, 0.1, 0.2, 0.3])
    now[0] = 1.0  # a second later the debt is repaid and the bucket refilled to capacity
    assert b.reserve(1) == 0 and b.reserve(1) == 0 and b.reserve(1) == pytest.approx(0.1)


async def test_rpm_holds_across_100_concurrent_callers():
    # virtual time: a caller's fake sleep moves *its* clock to the end of its wait, so each call's
    # start is the time the limiter scheduled it (no wall clock: a loaded machine wakes sleepers late)
    import contextvars

    rpm = 6000  # 100 requests/s, burst 10
    now: contextvars.ContextVar[float] = contextvars.ContextVar("now", default=0.0)
    slept: list[float] = []

    async def sleep(w: float) -> None:
        slept.append(w)
        now.set(now.get() + w)
        await asyncio.sleep(0)

    limiter = RateLimiter(rpm=rpm, burst=10, clock=now.get, sleep=sleep)
    model = ScriptedModel(default="ok")
    starts: list[float] = []

    async def caller(i: int) -> None:
        m = Limited(model, limiter)  # separate wrappers, one shared limiter: as the catalog builds them
        await m.complete(Request.of(f"q{i}"))
        starts.append(now.get())

    await asyncio.gather(*(caller(i) for i in range(100)))
    assert len(starts) == 100
    assert len(slept) == 90  # the burst of 10 went at once, every other caller waited its turn
    # in any window of w seconds at most burst + rate*w calls may start
    starts.sort()
    rate = rpm / 60
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            w = starts[j] - starts[i]
            assert j - i + 1 <= 10 + rate * w + 1e-6, f"{j - i + 1} calls within {w:.3f}s"
    assert starts[-1] == pytest.approx((100 - 10) / rate)  # spread out at the rate, not bunched, not slower


async def test_tpm_reserves_estimate_and_settles_to_actual():
    now = [0.0]
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(d)
        now[0] += d

    lim = RateLimiter(tpm=6000, token_burst=200, clock=lambda: now[0], sleep=sleep)  # 100 tokens/s
    m = Limited(ScriptedModel(default="ok"), lim)
    await m.complete(Request.of("x" * 400, max_tokens=100))  # estimate 100 + 100 = 200 tokens: fits the burst
    assert slept == []
    # the real usage was ~101 tokens, so ~99 come back; the next 200-token request waits for ~101 tokens
    await m.complete(Request.of("x" * 400, max_tokens=100))
    assert slept and slept[0] == pytest.approx(1.0, abs=0.05)


def test_limiter_needs_a_limit():
    with pytest.raises(ConfigError):
        RateLimiter()
    with pytest.raises(ConfigError):
        TokenBucket(0, 1)
