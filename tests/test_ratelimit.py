"""Limited/RateLimiter: RPM and TPM hold across many concurrent callers sharing one limiter."""

from __future__ import annotations

import asyncio
import time

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
    rpm = 6000  # 100 requests/s, burst 10
    limiter = RateLimiter(rpm=rpm, burst=10)
    model = ScriptedModel(default="ok")
    starts: list[float] = []

    async def caller(i: int) -> None:
        m = Limited(model, limiter)  # separate wrappers, one shared limiter: as the catalog builds them
        await m.complete(Request.of(f"q{i}"))
        starts.append(time.monotonic())

    t0 = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(100)))
    elapsed = time.monotonic() - t0
    assert len(starts) == 100
    # in any window of w seconds at most burst + rate*w calls may start
    starts.sort()
    rate = rpm / 60
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            w = starts[j] - starts[i]
            assert j - i + 1 <= 10 + rate * w + 1, f"{j - i + 1} calls within {w:.3f}s"
    assert elapsed >= (100 - 10) / rate * 0.95  # it really was spread out, not just fast


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
