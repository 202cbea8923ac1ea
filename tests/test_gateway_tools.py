"""Tools through the gateway, started as a user starts it (``turnout serve``) in front of the loopback
mock upstream: the official ``openai`` client's tool loop (sync, async, streaming) and LangChain's
``bind_tools`` loop pass unchanged, for a catalog model and ``turnout/auto``; the whole
conversation is the run's input; logprobs come back when the upstream gives them; ``/v1/models/{id}``
and ``dimensions`` answer as OpenAI's do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from test_gateway import start_server, stop

from turnout.store import SQLiteStore

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOOLS = [{"type": "function", "function": {"name": "get_invoice", "description": "Look up an invoice by number.",
                                           "parameters": {"type": "object", "properties": {"number": {"type": "string"}},
                                                          "required": ["number"]}}}]


@pytest.fixture
def gw(tmp_path: Path, mock_process: str) -> Iterator[dict]:
    (tmp_path / "models.yaml").write_text(
        "models:\n"
        f"  cheap: {{adapter: openai, base_url: '{mock_process}', price: {{input: 1, output: 2}}, tier: small, "
        "policies: {retry: {attempts: 1}}}\n"
        "auto: {tiers: {small: [cheap]}}\n")
    (tmp_path / "wf.yaml").write_text("name: echo\nsteps:\n  - call: {model: cheap, prompt: '{input}'}\n")
    proc, base = start_server(tmp_path, mock_process, "--no-auth")
    try:
        yield {"base": base, "upstream": mock_process, "db": tmp_path / "gw.db"}
    finally:
        stop(proc)


def _script(upstream: str, *turns: list[dict]) -> None:
    httpx.post(upstream.removesuffix("/v1") + "/_mock/tool_calls", json={"turns": list(turns)}, timeout=5)


def _loop(client: openai.OpenAI, model: str, *, stream: bool) -> tuple[str, list, list[str]]:
    """The tool loop every OpenAI user writes: ask, run the calls, send the results, get the answer.
    Also returns the two requests' run ids (response header)."""
    msgs: list = [{"role": "user", "content": "What is the total of invoice INV-1042?"}]
    create = client.chat.completions.with_raw_response.create
    if stream:
        calls: dict[int, dict] = {}
        raw = create(model=model, messages=msgs, tools=TOOLS, stream=True)
        for ev in raw.parse():
            for d in (ev.choices[0].delta.tool_calls or []) if ev.choices else []:
                c = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                c["id"] = d.id or c["id"]
                c["name"] = (d.function.name if d.function and d.function.name else "") or c["name"]
                c["arguments"] += d.function.arguments or "" if d.function else ""
        tool_calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                      for _, c in sorted(calls.items())]
    else:
        raw = create(model=model, messages=msgs, tools=TOOLS, tool_choice="auto")
        r = raw.parse()
        assert r.choices[0].finish_reason == "tool_calls"
        tool_calls = [t.model_dump() for t in r.choices[0].message.tool_calls]
    msgs.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
    for t in tool_calls:
        args = json.loads(t["function"]["arguments"])
        msgs.append({"role": "tool", "tool_call_id": t["id"], "content": json.dumps({"number": args["number"], "total": 42.5})})
    last = create(model=model, messages=msgs, tools=TOOLS)
    return last.parse().choices[0].message.content, tool_calls, [raw.headers["x-turnout-run-id"], last.headers["x-turnout-run-id"]]


@pytest.mark.parametrize("model", ["cheap", "turnout/auto"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_official_client_tool_loop(gw, model, stream):
    client = openai.OpenAI(base_url=gw["base"] + "/v1", api_key="unused", max_retries=0, timeout=60)
    _script(gw["upstream"], [{"name": "get_invoice", "arguments": {"number": "INV-1042"}}])
    answer, calls, runs = _loop(client, model, stream=stream)
    assert [c["function"]["name"] for c in calls] == ["get_invoice"] and json.loads(calls[0]["function"]["arguments"]) == {
        "number": "INV-1042"}
    assert answer == 'tool said: {"number": "INV-1042", "total": 42.5}'
    first, second = (httpx.get(f"{gw['base']}/v1/runs/{r}", timeout=60).json() for r in runs)  # the server flushes, then reads
    assert first["run"]["input"] == "user: What is the total of invoice INV-1042?" and "get_invoice" in first["run"]["output"]
    # the second run's input is the whole conversation: the question, the call and the tool's result
    assert "assistant calls get_invoice" in second["run"]["input"] and '"total": 42.5' in second["run"]["input"]
    store = SQLiteStore(gw["db"])
    assert [c.tools for c in store.calls(run_id=runs[0])] == [("get_invoice",)]
    store.close()


async def test_the_async_client_with_parallel_calls(gw):
    client = openai.AsyncOpenAI(base_url=gw["base"] + "/v1", api_key="unused", max_retries=0, timeout=60)
    _script(gw["upstream"], [{"name": "get_invoice", "arguments": {"number": "A"}}, {"name": "get_invoice", "arguments": {"number": "B"}}])
    r = await client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "A and B?"}], tools=TOOLS,
                                             parallel_tool_calls=True)
    assert [json.loads(t.function.arguments)["number"] for t in r.choices[0].message.tool_calls] == ["A", "B"]
    await client.close()


def test_malformed_upstream_arguments_are_an_error_not_a_broken_call(gw):
    _script(gw["upstream"], [{"name": "get_invoice", "arguments": {"number": "INV-1"}}])
    httpx.post(gw["upstream"].removesuffix("/v1") + "/_mock/faults", json={"kind": "bad_tool_args"}, timeout=5)
    r = httpx.post(gw["base"] + "/v1/chat/completions", json={"model": "cheap", "messages": [{"role": "user", "content": "x"}],
                                                              "tools": TOOLS}, timeout=60)
    assert r.status_code == 502 and "get_invoice" in r.json()["error"]["message"], r.text


def test_bad_tool_fields_are_400s_naming_the_field(gw):
    def post(**body):
        return httpx.post(gw["base"] + "/v1/chat/completions", json={"model": "cheap", "messages": [
            {"role": "user", "content": "x"}], **body}, timeout=60)

    r = post(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
    r = post(tools=[{"type": "function", "function": {"name": "bad name"}}])
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    r = httpx.post(gw["base"] + "/v1/chat/completions", json={"model": "cheap", "messages": [{"role": "tool", "content": "x"}]}, timeout=60)
    assert r.status_code == 400 and "tool_call_id" in r.json()["error"]["param"]


def test_langchain_bind_tools_loop(gw):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_invoice(number: str) -> str:
        """Look up an invoice by number."""
        return json.dumps({"number": number, "total": 42.5})

    _script(gw["upstream"], [{"name": "get_invoice", "arguments": {"number": "INV-7"}}])
    llm = ChatOpenAI(model="cheap", base_url=gw["base"] + "/v1", api_key="unused", max_retries=0, timeout=60).bind_tools([get_invoice])
    msgs: list = [HumanMessage("What is on invoice INV-7?")]
    ai = llm.invoke(msgs)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_invoice" and ai.tool_calls[0]["args"] == {"number": "INV-7"}
    msgs += [ai, *(ToolMessage(get_invoice.invoke(c["args"]), tool_call_id=c["id"]) for c in ai.tool_calls)]
    final = llm.invoke(msgs)
    assert final.content == 'tool said: {"number": "INV-7", "total": 42.5}'


def test_logprobs_models_by_id_and_dimensions(gw):
    client = openai.OpenAI(base_url=gw["base"] + "/v1", api_key="unused", max_retries=0, timeout=60)
    r = client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "two words"}], logprobs=True, top_logprobs=2)
    lp = r.choices[0].logprobs.content
    assert [t.token for t in lp] == ["echo:", "two", "words"] and lp[1].logprob == pytest.approx(-0.1)
    assert [a.token for a in lp[1].top_logprobs] == ["TWO0", "TWO1"]
    assert client.models.retrieve("cheap").id == "cheap" and client.models.retrieve("workflow/echo").id == "workflow/echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    r = httpx.post(gw["base"] + "/v1/embeddings", json={"model": "local-embed", "input": "x", "dimensions": 64}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions" and "384" in r.json()["error"]["message"]


def test_n_samples_come_from_n_upstream_calls_with_one_usage(gw):
    client = openai.OpenAI(base_url=gw["base"] + "/v1", api_key="unused", max_retries=0, timeout=60)
    stats = gw["upstream"].removesuffix("/v1") + "/_mock/stats"
    before = httpx.get(stats, timeout=5).json()["count"]
    one = client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "three of these"}])
    r = client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "three of these"}], n=3, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2] and all(c.message.content == "echo: three of these" for c in r.choices)
    assert httpx.get(stats, timeout=5).json()["count"] - before == 4  # one, then three
    assert r.usage.completion_tokens == 3 * one.usage.completion_tokens and r.usage.prompt_tokens == 3 * one.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError, match="whole answers only"):
        client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "x"}], n=2, stream=True)


def test_litellm_as_a_client(gw, monkeypatch):
    """LiteLLM's ``completion`` (the OpenAI provider pointed at ``turnout serve``): a tool call, then
    the answer from the tool's result. Its cost map is read from the package, never fetched."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    _script(gw["upstream"], [{"name": "get_invoice", "arguments": {"number": "INV-5"}}])
    kw = {"model": "openai/cheap", "api_base": gw["base"] + "/v1", "api_key": "unused", "timeout": 60, "tools": TOOLS}
    msgs: list = [{"role": "user", "content": "invoice INV-5?"}]
    r = litellm.completion(messages=msgs, **kw)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_invoice"
    assert json.loads(call.function.arguments) == {"number": "INV-5"}
    msgs += [r.choices[0].message.model_dump(), {"role": "tool", "tool_call_id": call.id, "content": '{"total": 7}'}]
    final = litellm.completion(messages=msgs, **kw)
    assert final.choices[0].message.content == 'tool said: {"total": 7}'
