"""The policy stack with tools: failover skips a model without tool support (with the reason),
compliance scans tool calls' arguments and tool results (refused or redacted, the JSON kept),
traces record which tools were called (JSON and streamed), budgets reserve for the tool
definitions."""

from __future__ import annotations

import json

import pytest

from turnout import Price, Request
from turnout._types import Message, Tool, ToolCall
from turnout.errors import AllModelsFailed, ComplianceError, ToolsNotSupported
from turnout.models.base import collect_stream
from turnout.models.catalog import ModelSpec, PolicySpec
from turnout.policies.catalog import Catalog
from turnout.policies.compliance import DataPolicy, Detector
from turnout.store import SQLiteStore
from turnout.testing import MockServer

INVOICE = Tool("get_invoice", "Look up an invoice.", {"type": "object", "properties": {"number": {"type": "string"}}})
CARD = "4111 1111 1111 1111"


@pytest.fixture
async def srv():
    async with MockServer() as s:
        yield s


def _catalog(srv, *, policy=None, old_tools=False, **kw) -> Catalog:
    specs = [
        ModelSpec("old", "openai", model="old", base_url=srv.url, price=Price(1, 1), tools=old_tools, data_classes=("*",),
                  policies=PolicySpec(retry_attempts=1, fallback=("new",))),
        ModelSpec("new", "openai", model="new", base_url=srv.url, price=Price(2, 2), data_classes=kw.get("new_classes", ("*",)),
                  policies=PolicySpec(retry_attempts=1)),
    ]
    return Catalog(specs, include_embedded=False, policy=policy)


async def test_failover_skips_a_model_without_tools_and_says_why(srv):
    cat = _catalog(srv)
    c = await cat.model("old").complete(Request.of("invoice INV-1?", tools=(INVOICE,)))
    assert c.model == "new" and c.tool_calls[0].name == "get_invoice"
    assert [r.body["model"] for r in srv.requests] == ["new"]  # the old model was never asked
    assert (await cat.model("old").complete(Request.of("hello"))).model == "old"  # without tools it serves as before
    only = Catalog([ModelSpec("old", "openai", base_url=srv.url, tools=False, policies=PolicySpec(retry_attempts=1))],
                   include_embedded=False)
    with pytest.raises(ToolsNotSupported) as e:
        await only.model("old").complete(Request.of("x", tools=(INVOICE,)))
    assert "does not take tools" in str(e.value) and "tools: false" in str(e.value)
    await cat.aclose()
    await only.aclose()


async def test_compliance_scans_tool_arguments_and_results(srv):
    policy = DataPolicy(Detector())
    cat = _catalog(srv, policy=policy, old_tools=True, new_classes=())
    cat2 = Catalog([ModelSpec("cloud", "openai", base_url=srv.url, data_classes=(), policies=PolicySpec(retry_attempts=1))],
                   include_embedded=False, policy=policy)
    call = ToolCall("c1", "get_invoice", json.dumps({"card": CARD}))
    in_args = Request((Message.user("look it up"), Message.assistant("", [call]), Message.tool("c1", "not found")), tools=(INVOICE,))
    in_result = Request((Message.user("look it up"), Message.assistant("", [ToolCall("c1", "get_invoice", "{}")]),
                         Message.tool("c1", f"card on file: {CARD}")), tools=(INVOICE,))
    for req in (in_args, in_result):
        with pytest.raises(ComplianceError):
            await cat2.model("cloud").complete(req)
    assert not srv.requests  # refused before anything was sent
    redacting = Catalog([ModelSpec("cloud", "openai", base_url=srv.url, data_classes=(), policies=PolicySpec(retry_attempts=1))],
                        include_embedded=False, policy=DataPolicy(Detector(), redact=frozenset({"email"})))
    mail = ToolCall("c2", "get_invoice", json.dumps({"email": "ann@example.com"}))
    await redacting.model("cloud").complete(Request((Message.user("hi"), Message.assistant("", [mail]), Message.tool("c2", "ok")),
                                                    tools=(INVOICE,)))
    sent = srv.requests[-1].body["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert "ann@example.com" not in sent and json.loads(sent) == {"email": "[EMAIL]"}  # redacted, still JSON
    for c in (cat, cat2, redacting):
        await c.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_traces_record_the_tools_called(srv, tmp_path, stream):
    cat = _catalog(srv, old_tools=True)
    store = SQLiteStore(tmp_path / "t.db")
    srv.script_tool_calls([[("get_invoice", {"number": "A"}), ("get_invoice", {"number": "B"})]])
    m = cat.model("old")
    with store.run("tools"):
        req = Request.of("two invoices", tools=(INVOICE,))
        c = await (collect_stream(m.stream(req), m.name) if stream else m.complete(req))
        await m.complete(Request.of("no tools here"))
    assert len(c.tool_calls) == 2
    store.flush()
    rows = store.calls()
    assert [r.tools for r in rows] == [("get_invoice", "get_invoice"), ()] and rows[0].stream is stream
    store.close()
    await cat.aclose()


def test_a_budget_reserves_for_the_tool_definitions():
    """The reservation before a call bounds its prompt with the tools in it (no undercount)."""
    price = Price(1000.0, 0.0)
    big = Tool("lookup", "x" * 2000, {"type": "object", "properties": {}})
    plain, tooled = Request.of("hi", max_tokens=1), Request.of("hi", max_tokens=1, tools=(big,))
    assert price.estimate(tooled) - price.estimate(plain) >= 2000 * 1000.0 / 1e6  # ≥ the description's 2000 characters


async def test_all_without_tools_is_all_models_failed_naming_each(srv):
    specs = [ModelSpec(n, "openai", base_url=srv.url, tools=False, policies=PolicySpec(retry_attempts=1, fallback=("b",) if n == "a" else ()))
             for n in ("a", "b")]
    cat = Catalog(specs, include_embedded=False)
    with pytest.raises(AllModelsFailed) as e:
        await cat.model("a").complete(Request.of("x", tools=(INVOICE,)))
    assert [n for n, _ in e.value.errors] == ["a", "b"] and all("tools" in str(err) for _, err in e.value.errors)
    assert not srv.requests
    await cat.aclose()
