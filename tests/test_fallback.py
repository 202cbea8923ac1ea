"""Fallback: ordered chain, cooldown per failing model, streams fall back only before the first token."""

from __future__ import annotations

import pytest

from turnout import ConfigError, OpenAICompatible, Request
from turnout.errors import AllModelsFailed, AuthError, BadResponse, InvalidRequest, ProviderUnavailable, RateLimited
from turnout.policies import Fallback, MemorySink, Traced
from turnout.testing import MockServer, ScriptedModel

REQ = Request.of("q")


async def test_falls_through_to_the_next_model():
    a = ScriptedModel(queue=[ProviderUnavailable("a down")], name="a")
    b = ScriptedModel(default="from b", name="b")
    sink = MemorySink()
    c = await Traced(Fallback([a, b]), sink).complete(REQ)
    assert c.text == "from b" and a.calls == 1 and b.calls == 1
    assert sink.events[-1].fallback == "b"


async def test_failing_model_cools_down_then_is_retried():
    now = [0.0]
    a = ScriptedModel(queue=[ProviderUnavailable("a down")], default="from a", name="a")
    b = ScriptedModel(default="from b", name="b")
    fb = Fallback([a, b], cooldown=30, clock=lambda: now[0])
    assert (await fb.complete(REQ)).text == "from b"
    now[0] = 10.0
    assert (await fb.complete(REQ)).text == "from b" and a.calls == 1  # a is skipped while cooling
    now[0] = 31.0
    assert (await fb.complete(REQ)).text == "from a" and a.calls == 2  # cooled down, first again


async def test_retry_after_extends_the_cooldown():
    now = [0.0]
    a = ScriptedModel(queue=[RateLimited("429", retry_after=120)], default="from a", name="a")
    b = ScriptedModel(default="from b", name="b")
    fb = Fallback([a, b], cooldown=5, clock=lambda: now[0])
    await fb.complete(REQ)
    now[0] = 60.0
    assert (await fb.complete(REQ)).text == "from b"
    now[0] = 121.0
    assert (await fb.complete(REQ)).text == "from a"


async def test_all_cooling_are_still_tried_rather_than_dead_ending():
    now = [0.0]
    a = ScriptedModel(queue=[ProviderUnavailable("x")], default="a back", name="a")
    b = ScriptedModel(queue=[ProviderUnavailable("y")], default="b back", name="b")
    fb = Fallback([a, b], cooldown=30, clock=lambda: now[0])
    with pytest.raises(AllModelsFailed) as ei:
        await fb.complete(REQ)
    assert [n for n, _ in ei.value.errors] == ["a", "b"] and ei.value.retryable
    assert (await fb.complete(REQ)).text == "a back"  # both cooling: try the soonest anyway


async def test_invalid_request_does_not_cool_a_model_down():
    a = ScriptedModel(queue=[InvalidRequest("bad param")], default="a ok", name="a")
    b = ScriptedModel(default="b ok", name="b")
    fb = Fallback([a, b])
    assert (await fb.complete(REQ)).text == "b ok"
    assert (await fb.complete(REQ)).text == "a ok"


async def test_config_errors_are_not_swallowed():
    a = ScriptedModel(queue=[ConfigError("your fault")], name="a")
    b = ScriptedModel(default="b", name="b")
    with pytest.raises(ConfigError):
        await Fallback([a, b]).complete(REQ)
    assert b.calls == 0


async def test_all_failed_lists_every_error():
    fb = Fallback([ScriptedModel(queue=[AuthError("bad key")], name="a"), ScriptedModel(queue=[ProviderUnavailable("down")], name="b")])
    with pytest.raises(AllModelsFailed) as ei:
        await fb.complete(REQ)
    assert "a: AuthError" in str(ei.value) and "b: ProviderUnavailable" in str(ei.value)
    assert not ei.value.retryable  # an auth failure will not fix itself


async def test_stream_falls_back_before_first_token_against_real_servers():
    async with MockServer() as s1, MockServer() as s2:
        s1.fail("503")
        a = OpenAICompatible("a", base_url=s1.url)
        b = OpenAICompatible("b", base_url=s2.url)
        chunks = [c async for c in Fallback([a, b]).stream(REQ)]
        assert "".join(c.delta for c in chunks) == "echo: q" and chunks[-1].model == "b"
        await a.aclose()
        await b.aclose()


async def test_stream_does_not_fall_back_after_first_token():
    async with MockServer() as s1, MockServer() as s2:
        s1.fail("truncate")
        a = OpenAICompatible("a", base_url=s1.url)
        b = OpenAICompatible("b", base_url=s2.url)
        got = []
        with pytest.raises(BadResponse):
            async for c in Fallback([a, b]).stream(Request.of("one two three four five six")):
                got.append(c.delta)
        assert got and s2.count == 0  # tokens were already sent: no silent switch mid-answer
        await a.aclose()
        await b.aclose()
