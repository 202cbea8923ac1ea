"""Tool and agent steps: a ``tool:`` step calls a Python function (sync or async, from a module or a
file beside the workflow), an ``agent:`` gives a model tools in a bounded loop — each call a step
of the run, tool errors fed back, limits, budget and deadline held — a route dispatches one input
to a tool and another to a prompt, every reference is checked before any call; and the embedded
model calls a Python tool and answers with its result."""

from __future__ import annotations

import asyncio
import json

import pytest

from turnout import Price
from turnout._types import ToolCall
from turnout.errors import ConfigError
from turnout.store import SQLiteStore
from turnout.testing import ScriptedModel
from turnout.workflows import Workflow
from turnout.workflows.tools import AgentStep, FunctionTool

TOOLS_PY = '''
INVOICES = {"INV-1042": {"total": 42.5, "status": "paid"}}
REFUNDS = []

def get_invoice(number: str) -> dict:
    """Look up an invoice by its number: its total and status."""
    if number not in INVOICES:
        raise KeyError(f"no invoice {number}")
    return {"number": number, **INVOICES[number]}

async def issue_refund(number: str, amount: float) -> str:
    """Refund an amount of an invoice."""
    REFUNDS.append((number, amount))
    return f"refunded {amount} on {number}"
'''

HEAD = """tools:
  get_invoice: {function: "billing_tools:get_invoice"}
  issue_refund: {function: "billing_tools:issue_refund"}
"""


@pytest.fixture
def wf_dir(tmp_path):
    (tmp_path / "billing_tools.py").write_text(TOOLS_PY)
    return tmp_path


def _load(d, body, model):
    (d / "wf.yaml").write_text("name: t\n" + HEAD + body)
    return Workflow.load(d / "wf.yaml", models={"local": model})


async def test_a_tool_step_calls_the_function_and_its_result_flows_on(wf_dir):
    m = ScriptedModel(default="ok")
    wf = _load(wf_dir, """steps:
  - name: inv
    tool: {name: get_invoice, arguments: {number: "{input}"}}
  - call: {prompt: "The total is {steps.inv.total}"}
""", m)
    res = await wf.run("INV-1042")
    assert res.status == "ok" and m.history[0].messages[-1].content == "The total is 42.5"
    assert [(s.kind, s.status, s.detail.get("tool")) for s in res.steps][:1] == [("tool", "ok", "get_invoice")]


async def test_an_agent_loops_with_tools_records_each_call_and_feeds_errors_back(wf_dir):
    m = ScriptedModel(queue=[
        [ToolCall("c1", "get_invoice", '{"number": "INV-9"}'), ToolCall("c2", "get_invoice", '{"number": "INV-1042"}')],
        ToolCall("c3", "issue_refund", '{"number": "INV-1042", "amount": 5}'),
        "Refunded 5 of 42.5.",
    ])
    wf = _load(wf_dir, """steps:
  - name: billing
    agent: {tools: [get_invoice, issue_refund], prompt: "Refund 5 on {input}", system: "You are billing."}
""", m)
    store = SQLiteStore(wf_dir / "t.db")
    res = await wf.run("INV-1042", store=store)
    assert res.status == "ok" and res.output == "Refunded 5 of 42.5."
    second = m.history[1]  # the model saw both results, the missing invoice as an error it can act on
    results = {x.tool_call_id: x.content for x in second.messages if x.role == "tool"}
    assert results["c1"] == "error: tool get_invoice failed: KeyError: no invoice INV-9" and json.loads(results["c2"])["total"] == 42.5
    assert [t.name for t in second.tools] == ["get_invoice", "issue_refund"] and second.messages[0].content == "You are billing."
    store.flush()
    steps = [(s["name"], s["kind"], s["status"]) for s in store.steps(run_id=res.run_id)]
    assert ("billing.get_invoice", "tool", "error") in steps and ("billing.issue_refund", "tool", "ok") in steps
    assert ("billing", "agent", "ok") in steps and len([s for s in steps if s[1] == "tool"]) == 3
    store.close()


async def test_the_loop_is_bounded_by_turns_and_calls(wf_dir):
    loops = ScriptedModel(default=lambda r: "done" if r.tool_choice == "none" else ToolCall("c", "get_invoice", json.dumps(
        {"number": f"INV-{len(r.messages)}"})))  # a new call each turn: only max_turns stops it
    wf = _load(wf_dir, "steps:\n  - name: a\n    agent: {tools: [get_invoice], max_turns: 3}\n", loops)
    res = await wf.run("x")
    assert res.output == "done" and loops.calls == 4 and loops.history[-1].tool_choice == "none"  # 3 turns, then answer
    agent = next(s for s in res.steps if s.kind == "agent")
    assert agent.detail["stopped"] == "max_turns" and agent.detail["tool_calls"] == 3
    many = ScriptedModel(default=lambda r: "done" if r.tool_choice == "none" else [ToolCall(f"c{i}", "get_invoice", '{"number": "INV-1042"}')
                                                                                  for i in range(3)])
    wf = _load(wf_dir, "steps:\n  - name: a\n    agent: {tools: [get_invoice], max_tool_calls: 4}\n", many)
    res = await wf.run("x")
    tools = [s for s in res.steps if s.kind == "tool"]
    assert [s.status for s in tools] == ["ok"] * 4 + ["skipped"] * 2 and res.output == "done"


async def test_a_model_asking_the_same_call_again_is_made_to_answer(wf_dir):
    same = ScriptedModel(default=lambda r: "the total is 42.5" if r.tool_choice == "none" else ToolCall("c", "get_invoice",
                                                                                                        '{"number": "INV-1042"}'))
    wf = _load(wf_dir, "steps:\n  - name: a\n    agent: {tools: [get_invoice], max_turns: 10}\n", same)
    res = await wf.run("x")
    agent = next(s for s in res.steps if s.kind == "agent")
    assert res.output == "the total is 42.5" and agent.detail["stopped"] == "repeated_call" and same.calls == 3


async def test_an_agents_budget_and_deadline_hold(wf_dir):
    pricey = ScriptedModel(default=lambda r: ToolCall("c", "get_invoice", json.dumps({"number": f"INV-{len(r.messages)}"})),
                           price=Price(1000.0, 1000.0))  # a new call each turn: only the budget stops it
    wf = _load(wf_dir, "steps:\n  - name: a\n    agent: {tools: [get_invoice], budget_usd: 0.5, max_turns: 20, max_tokens: 50}\n", pricey)
    res = await wf.run("look it up")
    assert res.status == "error" and "budget" in res.error and pricey.calls < 20  # refused before the call that would pass it

    class Hangs(ScriptedModel):
        async def _reply(self, request):
            await asyncio.Event().wait()  # only the deadline ends this call

    wf = _load(wf_dir, "steps:\n  - name: a\n    agent: {tools: [get_invoice], deadline: 0.3}\n", Hangs())
    res = await asyncio.wait_for(wf.run("x"), 60)  # the bound is a hang guard only
    assert res.status == "error" and "deadline" in res.error


async def test_a_route_dispatches_to_a_tool_or_a_prompt(wf_dir):
    m = ScriptedModel(default="a general answer")
    wf = _load(wf_dir, """routers:
  kind:
    router: rule
    fallback: other
    routes:
      invoice: {regexes: ["INV-\\\\d+"]}
      other: {keywords: [hello]}
steps:
  - route:
      router: kind
      routes:
        invoice: {name: lookup, tool: {name: get_invoice, arguments: {number: "{input}"}}}
        other: {name: chat, call: {prompt: "{input}"}}
""", m)
    store = SQLiteStore(wf_dir / "r.db")
    a, b = await wf.run("INV-1042", store=store), await wf.run("hello there", store=store)
    assert a.output == {"number": "INV-1042", "total": 42.5, "status": "paid"} and m.calls == 1 and b.output == "a general answer"
    store.flush()
    assert [(s["name"], s["kind"]) for s in store.steps(run_id=a.run_id) if s["kind"] not in ("route", "chain")] == [("lookup", "tool")]
    assert [(s["name"], s["kind"]) for s in store.steps(run_id=b.run_id) if s["kind"] not in ("route", "chain")] == [("chat", "call")]
    assert [d.route for d in store.decisions(run_id=a.run_id)] == ["invoice"]
    store.close()


@pytest.mark.parametrize("body, where", [
    ("steps:\n  - agent: {tools: [refund]}\n", r"wf.yaml:\d+: steps.0.agent.tools.0: unknown tool 'refund'"),
    ("steps:\n  - tool: {name: get_invoice, arguments: {num: '{input}'}}\n", r"steps.0.tool.arguments: .*unknown argument\(s\) num"),
    ("steps:\n  - tool: {name: get_invoice, arguments: {number: 5}}\n", r"steps.0.tool.arguments: .*number: Input should be a valid string"),
    ("steps:\n  - agent: {tools: [get_invoice], tool_choice: issue_refund}\n", r"steps.0.agent.tool_choice"),
])
def test_every_reference_is_checked_before_any_call(wf_dir, body, where):
    m = ScriptedModel(default="x")
    with pytest.raises(ConfigError, match=where):
        _load(wf_dir, body, m)
    (wf_dir / "bad.yaml").write_text("name: t\ntools:\n  get_invoice: {function: 'billing_tools:nope'}\nsteps:\n  - tool: get_invoice\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: tools.get_invoice.function: .*has no function 'nope'"):
        Workflow.load(wf_dir / "bad.yaml", models={"local": m})
    assert m.calls == 0


async def test_the_python_api_builds_the_same_agent():
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    tool = FunctionTool(add)
    assert tool.spec.parameters["required"] == ["a", "b"] and tool.spec.description == "Add two numbers."
    m = ScriptedModel(queue=[ToolCall("c", "add", '{"a": 2, "b": "x"}'), ToolCall("d", "add", '{"a": 2, "b": 3}'), "5"])
    res = await Workflow(AgentStep([tool], name="calc"), resolve=lambda name: m).run("2+3?")
    assert res.output == "5" and "b: Input should be a valid integer" in m.history[1].messages[-1].content


async def test_the_embedded_model_calls_a_python_tool_and_answers_with_its_result(wf_dir):
    """No key, no network: the shipped local model, a grammar-held call, the tool's result in the answer."""
    (wf_dir / "wf.yaml").write_text("name: t\n" + HEAD + """steps:
  - name: billing
    agent: {tools: [get_invoice, issue_refund], prompt: "What is the total of invoice {input}?", tool_choice: required, max_tokens: 120,
            temperature: 0}
""")
    wf = Workflow.load(wf_dir / "wf.yaml")
    try:
        res = await wf.run("INV-1042")
    finally:
        await wf.aclose()
    assert res.status == "ok", res.error
    tools = [s for s in res.steps if s.kind == "tool"]
    assert tools and tools[0].detail["tool"] == "get_invoice" and tools[0].status == "ok"
    assert "42.5" in str(res.output)


async def test_orchestrator_workers_may_be_agents(wf_dir):
    """orchestrate: worker_agent: — each subtask is done by an agent with tools; its calls are steps."""
    def reply(r):
        text = r.messages[-1].content
        if r.response_format is not None and "subtasks" in str(r.response_format.schema):
            return json.dumps({"subtasks": [{"title": "first", "instruction": "look up INV-1042"},
                                            {"title": "second", "instruction": "look up INV-1042 again"}]})
        if r.tools and not any(m.role == "tool" for m in r.messages):
            return ToolCall("c1", "get_invoice", '{"number": "INV-1042"}')
        if r.tools:
            return "total " + str(json.loads([m.content for m in r.messages if m.role == "tool"][-1])["total"])
        return "combined: " + " / ".join(line for line in text.splitlines() if line.startswith("total"))

    m = ScriptedModel(default=reply)
    wf = _load(wf_dir, "steps:\n  - name: o\n    orchestrate: {worker_agent: {tools: [get_invoice]}}\n", m)
    res = await wf.run("two look-ups")
    assert res.status == "ok" and res.output == "combined: total 42.5 / total 42.5"
    assert [s.name for s in res.steps if s.kind == "tool"] == ["worker.get_invoice"] * 2
    with pytest.raises(ConfigError, match="worker_agent: .*not both"):
        _load(wf_dir, "steps:\n  - orchestrate: {worker: local, worker_agent: {tools: [get_invoice]}}\n", m)


def test_turnout_run_names_the_tools_called(wf_dir):
    from typer.testing import CliRunner

    from turnout.cli import app

    (wf_dir / "wf.yaml").write_text("name: t\n" + HEAD + "steps:\n  - name: inv\n    tool: {name: get_invoice, arguments: {number: '{input}'}}\n")
    r = CliRunner().invoke(app, ["run", str(wf_dir / "wf.yaml"), "-i", "INV-1042", "--db", str(wf_dir / "c.db")])
    assert r.exit_code == 0, r.output
    assert '"total": 42.5' in r.output and "tools" in r.output and "get_invoice" in r.output and "calls" in r.output
    r = CliRunner().invoke(app, ["run", str(wf_dir / "wf.yaml"), "-i", "INV-0", "--db", str(wf_dir / "c.db")])
    out = " ".join(r.output.split())  # the summary table wraps long lines
    assert r.exit_code == 1 and "tool get_invoice failed: KeyError: no invoice INV-0" in out and "Traceback" not in out
