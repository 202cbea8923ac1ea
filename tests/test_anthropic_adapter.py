"""The Anthropic Messages adapter against the loopback mock server."""

from __future__ import annotations

import pytest

from turnout import AnthropicModel, Price, Request, ResponseFormat
from turnout.errors import AuthError, BadResponse, MissingAPIKey, ProviderUnavailable, RateLimited
from turnout.testing import MockServer

KEY = "sk-ant-SECRET-42"


@pytest.fixture
async def srv():
    async with MockServer(api_key=KEY) as s:
        yield s


@pytest.fixture
async def model(srv):
    m = AnthropicModel("claude-mock", base_url=srv.root, api_key=KEY, price=Price(3.0, 15.0))
    yield m
    await m.aclose()


async def test_complete_sends_messages_api_shape(model, srv):
    c = await model.complete(Request.of("hi there", system="be kind", max_tokens=64, temperature=0.5, stop=["##"]))
    assert c.text == "echo: hi there" and c.finish_reason == "stop"
    body = srv.requests[-1].body
    assert body["system"] == "be kind" and body["messages"] == [{"role": "user", "content": "hi there"}]
    assert body["max_tokens"] == 64 and body["stop_sequences"] == ["##"]
    h = srv.requests[-1].headers
    assert h["x-api-key"] == KEY and h["anthropic-version"]
    assert c.cost_usd == pytest.approx((c.usage.input_tokens * 3 + c.usage.output_tokens * 15) / 1e6)


async def test_default_max_tokens_is_sent(model, srv):
    await model.complete(Request.of("x"))
    assert srv.requests[-1].body["max_tokens"] > 0  # required by the Messages API


async def test_json_schema_uses_a_forced_tool(model, srv):
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}
    c = await model.complete(Request.of("x", response_format=ResponseFormat.json_schema(schema, "pick")))
    assert c.json() == {"label": "a"}
    body = srv.requests[-1].body
    assert body["tools"][0]["input_schema"] == schema and body["tool_choice"] == {"type": "tool", "name": "pick"}


async def test_stream(model):
    chunks = [c async for c in model.stream(Request.of("a b c"))]
    assert "".join(c.delta for c in chunks) == "echo: a b c"
    assert chunks[-1].done and chunks[-1].usage.output_tokens == 4 and chunks[-1].cost_usd > 0


@pytest.mark.parametrize(("fault", "exc"), [("429", RateLimited), ("503", ProviderUnavailable), ("401", AuthError),
                                            ("malformed", BadResponse), ("shape", BadResponse), ("reset", ProviderUnavailable)])
async def test_faults(model, srv, fault, exc):
    srv.fail(fault)
    with pytest.raises(exc):
        await model.complete(Request.of("x"))


@pytest.mark.parametrize(("fault", "exc"), [("truncate", BadResponse), ("error_event", ProviderUnavailable)])
async def test_stream_faults(model, srv, fault, exc):
    srv.fail(fault)
    with pytest.raises(exc):
        async for _ in model.stream(Request.of("one two three four five")):
            pass


async def test_key_scrubbed(model, srv):
    srv.fail("echo_key")
    with pytest.raises(AuthError) as ei:
        await model.complete(Request.of("x"))
    assert KEY not in str(ei.value)


def test_missing_key():
    with pytest.raises(MissingAPIKey, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-3-5-haiku-latest")
