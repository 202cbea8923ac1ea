"""Tool calling through both HTTP adapters against the loopback MockServer: the request carries the
tools in each wire format, calls come back as ``ToolCall``s (whole answers and streamed deltas,
parallel calls), a tool result goes back as the next turn, and malformed arguments are a
``BadResponse`` naming the tool — never dropped."""

from __future__ import annotations

import json

import pytest

from turnout import AnthropicModel, OpenAICompatible, Request
from turnout._types import Message, Tool, ToolCall, ToolCallDelta, ToolCalls
from turnout.errors import BadResponse, ConfigError
from turnout.models.base import collect_stream
from turnout.testing import MockServer

INVOICE = Tool("get_invoice", "Look up an invoice by number.",
               {"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]})
REFUND = Tool("refund", "Refund an invoice.", {"type": "object", "properties": {"number": {"type": "string"}, "amount": {"type": "number"}},
                                                "required": ["number", "amount"]}, strict=True)


@pytest.fixture
async def srv():
    async with MockServer() as s:
        yield s


@pytest.fixture(params=["openai", "anthropic"])
async def model(request, srv):
    m = (OpenAICompatible("mock", base_url=srv.url) if request.param == "openai" else AnthropicModel("claude-mock", base_url=srv.root,
                                                                                                      api_key="k"))
    yield m
    await m.aclose()


def _ask(**kw):
    return Request.of("what is on invoice INV-1042?", tools=(INVOICE, REFUND), **kw)


async def test_the_request_carries_the_tools_in_each_wire_format(model, srv):
    await model.complete(_ask(tool_choice="refund", parallel_tool_calls=False))
    body = srv.requests[-1].body
    if isinstance(model, OpenAICompatible):
        assert body["tools"][0] == {"type": "function", "function": {"name": "get_invoice", "description": INVOICE.description,
                                                                     "parameters": dict(INVOICE.parameters)}}
        assert body["tools"][1]["function"]["strict"] is True
        assert body["tool_choice"] == {"type": "function", "function": {"name": "refund"}} and body["parallel_tool_calls"] is False
    else:
        assert body["tools"][0] == {"name": "get_invoice", "description": INVOICE.description, "input_schema": dict(INVOICE.parameters)}
        assert body["tool_choice"] == {"type": "tool", "name": "refund", "disable_parallel_tool_use": True}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_round_trips_and_the_result_goes_back(model, srv, stream):
    srv.script_tool_calls([[("get_invoice", {"number": "INV-1042"})]])
    req = _ask()
    c = await (collect_stream(model.stream(req), model.name) if stream else model.complete(req))
    assert c.finish_reason == "tool_calls" and len(c.tool_calls) == 1
    call = c.tool_calls[0]
    assert call.name == "get_invoice" and call.args() == {"number": "INV-1042"} and call.id
    # the conversation goes on: the assistant's call, then the tool's result
    nxt = req.with_(messages=(*req.messages, Message.assistant(c.text, c.tool_calls), Message.tool(call.id, '{"total": 42.5}', call.name)))
    a = await (collect_stream(model.stream(nxt), model.name) if stream else model.complete(nxt))
    assert a.finish_reason == "stop" and not a.tool_calls and a.text == 'tool said: {"total": 42.5}'
    sent = srv.requests[-1].body["messages"]
    if isinstance(model, OpenAICompatible):
        assert sent[-2] == {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_invoice", "arguments": call.arguments}}]}
        assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": '{"total": 42.5}'}
    else:
        assert sent[-2] == {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": "get_invoice",
                                                              "input": {"number": "INV-1042"}}]}
        assert sent[-1] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": '{"total": 42.5}'}]}


@pytest.mark.parametrize("stream", [False, True])
async def test_parallel_calls_come_back_in_order(model, srv, stream):
    srv.script_tool_calls([[("get_invoice", {"number": "A"}), ("refund", {"number": "B", "amount": 3.5})]])
    c = await (collect_stream(model.stream(_ask()), model.name) if stream else model.complete(_ask()))
    assert [(t.name, t.args()) for t in c.tool_calls] == [("get_invoice", {"number": "A"}), ("refund", {"number": "B", "amount": 3.5})]
    assert len({t.id for t in c.tool_calls}) == 2


async def test_streamed_calls_arrive_as_deltas(model, srv):
    srv.script_tool_calls([[("get_invoice", {"number": "INV-7"})]])
    pieces = [ch.tool_calls for ch in [c async for c in model.stream(_ask())] if ch.tool_calls]
    assert len(pieces) >= 2 and pieces[0][0].name == "get_invoice" and pieces[0][0].id  # the first piece names the call
    assert all(p[0].name is None for p in pieces[1:])  # later ones only add argument fragments
    asm = ToolCalls()
    for p in pieces:
        asm.add(p)
    assert asm.done()[0].args() == {"number": "INV-7"}


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_arguments_are_a_bad_response_naming_the_tool(model, srv, stream):
    srv.script_tool_calls([[("get_invoice", {"number": "INV-1042"})]])
    srv.fail("bad_tool_args")
    with pytest.raises(BadResponse, match="get_invoice") as e:
        await (collect_stream(model.stream(_ask()), model.name) if stream else model.complete(_ask()))
    assert e.value.model == model.name


async def test_tool_choice_none_and_a_default_call(model, srv):
    c = await model.complete(_ask(tool_choice="none"))
    assert not c.tool_calls and c.text.startswith("echo:")
    c = await model.complete(_ask(tool_choice="required"))  # nothing scripted: the first tool, its smallest arguments
    assert c.tool_calls[0].name == "get_invoice" and c.tool_calls[0].args() == {"number": "x"}


def test_tool_types_check_what_they_are_given():
    with pytest.raises(ConfigError, match="tool name"):
        Tool("get invoice")
    with pytest.raises(ConfigError, match="keyword"):
        Tool("auto")
    with pytest.raises(ConfigError, match="type object"):
        Tool("f", parameters={"type": "string"})
    with pytest.raises(ConfigError, match="tool_choice 'nope'"):
        Request.of("x", tools=(INVOICE,), tool_choice="nope")
    with pytest.raises(ConfigError, match="repeated"):
        Request.of("x", tools=(INVOICE, INVOICE))
    with pytest.raises(BadResponse, match="not JSON"):
        ToolCall("c1", "f", '{"a": ').args()
    asm = ToolCalls()
    asm.add([ToolCallDelta(1, "c2", "g", '{"b"'), ToolCallDelta(0, "c1", "f", "{}"), ToolCallDelta(1, arguments=": 2}")])
    assert asm.done() == (ToolCall("c1", "f", "{}"), ToolCall("c2", "g", '{"b": 2}'))


def test_tools_count_towards_the_prompt():
    """Budgets bound a call by its prompt: tool definitions and calls are part of it."""
    from turnout._types import prompt_token_bound

    plain = Request.of("hello")
    with_tools = Request.of("hello", tools=(INVOICE, REFUND))
    assert with_tools.prompt_chars > plain.prompt_chars + len(json.dumps(dict(INVOICE.parameters)))
    assert prompt_token_bound(with_tools) > prompt_token_bound(plain) + 50
    turn = Request((Message.user("hi"), Message.assistant("", [ToolCall("c", "refund", '{"number": "INV-1", "amount": 10}')])))
    assert turn.prompt_chars >= len("refund") + len('{"number": "INV-1", "amount": 10}')
