"""The OpenAI-compatible adapter against the real loopback mock server: answers, streams, every fault."""

from __future__ import annotations

import asyncio
import json

import pytest

from turnout import OpenAICompatible, Price, Request, ResponseFormat
from turnout.errors import (
    AuthError,
    BadResponse,
    InvalidRequest,
    MissingAPIKey,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from turnout.testing import MockServer, serve_app

KEY = "sk-test-SECRET-0123456789"


@pytest.fixture
async def srv():
    async with MockServer(api_key=KEY) as s:
        yield s


@pytest.fixture
async def model(srv):
    m = OpenAICompatible("gpt-mock", base_url=srv.url, api_key=KEY, price=Price(1.0, 2.0))
    yield m
    await m.aclose()


async def test_complete_returns_text_usage_and_cost(model, srv):
    c = await model.complete(Request.of("hello world", system="be brief", temperature=0.2, max_tokens=50, seed=7, stop=["\n"]))
    assert c.text == "echo: hello world"
    assert c.model == "gpt-mock" and c.finish_reason == "stop"
    # mock counts words: "be brief" (2) + "hello world" (2) in; "echo: hello world" (3) out
    assert (c.usage.input_tokens, c.usage.output_tokens) == (4, 3)
    assert c.cost_usd == pytest.approx((4 * 1.0 + 3 * 2.0) / 1e6)
    sent = srv.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50 and sent["seed"] == 7 and sent["stop"] == ["\n"]
    assert srv.requests[-1].headers["Authorization"] == f"Bearer {KEY}"


async def test_length_finish_reason(model):
    c = await model.complete(Request.of("one two three four five six", max_tokens=2))
    assert c.finish_reason == "length" and c.usage.output_tokens == 2


async def test_stream_yields_deltas_then_totals(model):
    chunks = [ch async for ch in model.stream(Request.of("alpha beta gamma"))]
    assert "".join(c.delta for c in chunks) == "echo: alpha beta gamma"
    assert len(chunks) >= 4
    last = chunks[-1]
    assert last.done and last.finish_reason == "stop"
    assert last.usage.output_tokens == 4 and last.cost_usd > 0
    assert not any(c.done for c in chunks[:-1])


async def test_json_schema_is_sent_and_answer_parses(model, srv):
    schema = {"type": "object", "properties": {"route": {"type": "string", "enum": ["billing", "tech"]}}, "required": ["route"]}
    c = await model.complete(Request.of("classify", response_format=ResponseFormat.json_schema(schema, "route")))
    assert c.json() == {"route": "billing"}
    rf = srv.requests[-1].body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == schema and rf["json_schema"]["name"] == "route"


async def test_concurrent_calls_share_one_session(model, srv):
    outs = await asyncio.gather(*(model.complete(Request.of(f"q{i}")) for i in range(50)))
    assert [o.text for o in outs] == [f"echo: q{i}" for i in range(50)]
    assert model._http._session is not None and srv.count == 50


@pytest.mark.parametrize(
    ("fault", "exc", "retryable"),
    [
        ("429", RateLimited, True),
        ("500", ProviderUnavailable, True),
        ("503", ProviderUnavailable, True),
        ("401", AuthError, False),
        ("400", InvalidRequest, False),
        ("malformed", BadResponse, False),
        ("shape", BadResponse, False),
        ("reset", ProviderUnavailable, True),
        ("truncate", ProviderUnavailable, True),
        ("hang", ProviderTimeout, True),
    ],
)
async def test_every_fault_becomes_a_typed_error(model, srv, fault, exc, retryable):
    srv.fail(fault)
    with pytest.raises(exc) as ei:  # a short timeout only where the mock never answers: no race on a loaded machine
        await model.complete(Request.of("x", timeout=0.5 if fault == "hang" else 60))
    assert ei.value.retryable is retryable
    assert "gpt-mock" in str(ei.value)
    # the adapter still works after the fault
    assert (await model.complete(Request.of("after"))).text == "echo: after"


async def test_rate_limited_carries_retry_after(srv, model):
    srv.retry_after = 7
    srv.fail("429")
    with pytest.raises(RateLimited) as ei:
        await model.complete(Request.of("x"))
    assert ei.value.retry_after == 7 and ei.value.status == 429


async def test_bad_response_has_a_short_excerpt(model, srv):
    srv.fail("malformed")
    with pytest.raises(BadResponse) as ei:
        await model.complete(Request.of("x"))
    assert "502 Bad Gateway" in str(ei.value) and len(str(ei.value)) < 400


@pytest.mark.parametrize("fault", ["truncate", "error_event", "500", "reset"])
async def test_stream_faults_raise(model, srv, fault):
    srv.fail(fault)
    with pytest.raises((BadResponse, ProviderUnavailable)):
        async for _ in model.stream(Request.of("one two three four five six seven")):
            pass


async def test_stream_timeout_bounds_each_read(srv):
    m = OpenAICompatible("gpt-mock", base_url=srv.url, api_key=KEY)
    srv.fail("hang")
    with pytest.raises(ProviderTimeout):
        async for _ in m.stream(Request.of("x", timeout=0.3)):
            pass
    await m.aclose()


async def test_key_never_appears_in_errors_or_repr(srv, model, caplog):
    assert KEY not in repr(model)
    srv.fail("echo_key")  # the server repeats the key inside its error body
    with pytest.raises(AuthError) as ei:
        await model.complete(Request.of("x"))
    assert KEY not in str(ei.value) and KEY not in repr(ei.value)
    assert "***" in str(ei.value)
    assert KEY not in caplog.text


def test_missing_key_names_env_var_and_argument():
    with pytest.raises(MissingAPIKey) as ei:
        OpenAICompatible("gpt-4o-mini")  # api.openai.com needs a key; conftest cleared the environment
    msg = str(ei.value)
    assert "OPENAI_API_KEY" in msg and "api_key=" in msg


def test_key_from_environment_unless_trust_env_false(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-env")
    m = OpenAICompatible("x", api_key_env="MY_KEY")
    assert m._headers["Authorization"] == "Bearer sk-env"
    with pytest.raises(MissingAPIKey):
        OpenAICompatible("x", api_key_env="MY_KEY", trust_env=False)


def test_loopback_endpoints_need_no_key():
    m = OpenAICompatible("llama", base_url="http://127.0.0.1:8080/v1")
    assert "Authorization" not in m._headers


async def test_logprobs_requested_and_parsed(srv, model):
    await model.complete(Request.of("x", logprobs=3))
    body = srv.requests[-1].body
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    from turnout.models.openai import parse_logprobs

    lp = parse_logprobs({"logprobs": {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2.3}]}]}})
    assert lp == [("a", -0.1, (("a", -0.1), ("b", -2.3)))]


def test_body_is_json_serialisable_for_all_options():
    from turnout.models.openai import openai_body

    req = Request.of("x", temperature=0, max_tokens=5, stop="END", seed=1, top_p=0.9, logprobs=2,
                     response_format=ResponseFormat("json_object"))
    body = openai_body(req, "m", True)
    json.dumps(body)
    assert body["stop"] == ["END"] and body["response_format"] == {"type": "json_object"}
    assert body["stream_options"] == {"include_usage": True}


async def test_a_stream_split_anywhere_by_the_network_reads_back_whole():
    """Events cut mid-line and mid-JSON across writes (each its own read), CRLF line ends, an `event:` field and a last line without its newline: the same answer."""
    from aiohttp import web

    doc = json.dumps({"choices": [{"index": 0, "delta": {"content": "héllo wörld"}, "finish_reason": None}]}).encode()
    fin = json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()
    body = b"data: " + doc + b"\r\n\r\n" + b"event: message\ndata: " + fin + b"\n\n" + b"data: [DONE]"
    cuts = [0, 3, 7, 20, len(doc) // 2, len(doc) + 6, len(doc) + 9, len(body) - 4, len(body)]

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for a, b in zip(cuts, cuts[1:], strict=False):
            await resp.write(body[a:b])  # drained before it returns
            await asyncio.sleep(0)  # the next piece after this one has gone out on its own
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    async with serve_app(app) as url:
        m = OpenAICompatible("m", base_url=url + "/v1", require_key=False)
        try:
            chunks = [c async for c in m.stream(Request.of("hi"))]
        finally:
            await m.aclose()
    assert "".join(c.delta for c in chunks) == "héllo wörld"
    assert chunks[-1].done and chunks[-1].finish_reason == "stop" and chunks[-1].usage.output_tokens == 2
