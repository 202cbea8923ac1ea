"""Retrying: backoff, Retry-After, only retryable errors, streams retried only before the first chunk."""

from __future__ import annotations

import pytest

from turnout import OpenAICompatible, Request
from turnout.errors import AuthError, InvalidRequest, ProviderUnavailable, RateLimited
from turnout.policies import (
    MemorySink,
    Retrying,
    RetryPolicy,
    Traced,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)
from turnout.policies.retry import RetryState
from turnout.testing import ScriptedModel

REQ = Request.of("q")


class Sleeps(list):
    async def __call__(self, d: float) -> None:
        self.append(d)


async def test_retries_transient_errors_then_succeeds():
    m = ScriptedModel(queue=[ProviderUnavailable("down"), ProviderUnavailable("down"), "ok"])
    sleeps = Sleeps()
    r = Retrying(m, RetryPolicy(stop=stop_after_attempt(5), wait=wait_exponential(1.0, jitter=False)), sleep=sleeps)
    assert (await r.complete(REQ)).text == "ok"
    assert m.calls == 3 and sleeps == [1.0, 2.0]


async def test_gives_up_after_attempts_and_raises_last_error():
    m = ScriptedModel(queue=[ProviderUnavailable(f"down {i}") for i in range(5)])
    r = Retrying(m, RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(0)), sleep=Sleeps())
    with pytest.raises(ProviderUnavailable, match="down 2"):
        await r.complete(REQ)
    assert m.calls == 3


@pytest.mark.parametrize("err", [AuthError("no"), InvalidRequest("bad"), ValueError("bug")])
async def test_non_retryable_errors_are_not_retried(err):
    m = ScriptedModel(queue=[err, "never"])
    r = Retrying(m, sleep=Sleeps())
    with pytest.raises(type(err)):
        await r.complete(REQ)
    assert m.calls == 1


async def test_honours_retry_after():
    m = ScriptedModel(queue=[RateLimited("slow down", retry_after=4.5), "ok"])
    sleeps = Sleeps()
    r = Retrying(m, RetryPolicy(wait=wait_fixed(0.1)), sleep=sleeps)
    assert (await r.complete(REQ)).text == "ok"
    assert sleeps == [4.5]


async def test_retry_after_beyond_the_cap_is_raised_not_waited():
    m = ScriptedModel(queue=[RateLimited("come back tomorrow", retry_after=86400), "ok"])
    sleeps = Sleeps()
    with pytest.raises(RateLimited):
        await Retrying(m, RetryPolicy(max_retry_after=60), sleep=sleeps).complete(REQ)
    assert sleeps == []


def test_jittered_backoff_grows_and_is_capped():
    w = wait_exponential(initial=1.0, max=8.0)
    for attempt, hi in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        for _ in range(20):
            d = w(RetryState(attempt, 0.0, Exception()))
            assert hi / 2 <= d <= hi


def test_stops_combine_with_or():
    stop = stop_after_attempt(10) | stop_after_delay(5)
    assert stop(RetryState(2, 6.0, Exception())) and stop(RetryState(10, 0.0, Exception()))
    assert not stop(RetryState(2, 1.0, Exception()))
    assert (wait_fixed(1) + wait_fixed(2))(RetryState(1, 0, Exception())) == 3


async def test_stream_retried_before_first_chunk_only():
    m = ScriptedModel(queue=[ProviderUnavailable("down"), "hello world"])
    r = Retrying(m, RetryPolicy(wait=wait_fixed(0)), sleep=Sleeps())
    text = "".join([c.delta async for c in r.stream(REQ)])
    assert text == "hello world" and m.calls == 2


async def test_retries_are_counted_in_the_trace():
    sink = MemorySink()
    m = ScriptedModel(queue=[ProviderUnavailable("x"), ProviderUnavailable("x"), "ok"])
    await Traced(Retrying(m, RetryPolicy(wait=wait_fixed(0)), sleep=Sleeps()), sink).complete(REQ)
    assert sink.events[-1].retries == 2 and sink.events[-1].ok


async def test_retry_against_real_server_faults(mock_server):
    mock_server.fail("503", times=2)
    mock_server.fail("429")
    m = OpenAICompatible("m", base_url=mock_server.url)
    mock_server.retry_after = 0
    r = Retrying(m, RetryPolicy(stop=stop_after_attempt(4), wait=wait_fixed(0.01)))
    c = await r.complete(REQ)
    assert c.text == "echo: q" and mock_server.count == 4
    await m.aclose()
