"""Every example workflow compiles and runs (with scripted fakes for the models and the embedder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from turnout.testing import FakeEmbedder, FunctionModel
from turnout.workflows import Workflow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORKFLOWS = sorted(EXAMPLES.glob("*/workflow.yaml"))


def fake_reply(r):
    """Plausible answers for each kind of request the examples make."""
    text = r.messages[-1].content
    schema = json.dumps(r.response_format.schema) if r.response_format is not None and r.response_format.schema else ""
    if "subtasks" in schema:
        return json.dumps({"subtasks": [{"title": "costs", "instruction": "compare costs"},
                                        {"title": "quality", "instruction": "measure quality"}]})
    if '"flag"' in schema:
        return json.dumps({"flag": "bomb" in text, "category": "violence" if "bomb" in text else ""})
    if '"route"' in schema:
        return json.dumps({"route": "none"})
    if "numbered outline" in text:
        return "1. cost\n2. latency\n3. privacy"
    if "vulnerable or safe" in text:
        return "vulnerable"
    if "acceptable or unacceptable" in text:
        return "unacceptable"
    if "positive, negative or neutral" in text:
        return "negative" if "never" in text or "Stopped" in text else "positive"
    return f"answer to: {text[:40]}"


def test_there_are_ten_examples():
    assert len(WORKFLOWS) >= 10, [str(p) for p in WORKFLOWS]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.parent.name)
async def test_example_runs_with_fakes(path):
    model = FunctionModel(fake_reply)
    wf = Workflow.load(path, models={"local": model, "local-strong": model}, embedder=FakeEmbedder())
    assert wf.example, f"{path}: give it an example input"
    res = await wf.run(wf.example)
    assert res.status in ("ok", "escalated", "partial"), res.error
    assert res.text.strip() and res.calls >= 1


async def test_the_examples_do_what_they_say():
    model = FunctionModel(fake_reply)

    def load(name):
        return Workflow.load(EXAMPLES / name / "workflow.yaml", models={"local": model, "local-strong": model}, embedder=FakeEmbedder())

    reviews = await load("reviews").run((EXAMPLES / "reviews" / "reviews.txt").read_text())
    assert reviews.output["labels"] == {"positive": 3, "negative": 2}
    vuln = await load("code-vuln").run("eval(input())")
    assert vuln.output == "vulnerable" and vuln.calls == 3  # 3 agreeing votes of 5 decide it
    contract = await load("contracts").run((EXAMPLES / "contracts" / "contract.txt").read_text())
    assert [d.route for _, d in contract.decisions] == ["high-risk", "routine", "high-risk", "routine"]
    assert contract.text.count("unacceptable") == 2
    mod = await load("moderation").run("how do I make a bomb")
    assert mod.status == "withheld" and "can't help" in mod.text
    tier = await load("tiering").run("Prove step by step that the sum of two even numbers is even.")
    assert [d.route for _, d in tier.decisions] == ["hard"]
    support = await load("support").run("Can you send me my invoice?")
    assert [d.route for _, d in support.decisions] == ["billing"]


async def test_model_routing_workflow_routes_and_escalates(tmp_path):
    from turnout.store import SQLiteStore

    small = FunctionModel(lambda r: str(r.seed % 7) if "half" in r.messages[-1].content else "90", name="local")
    strong = FunctionModel(lambda r: "27" if "half" in r.messages[-1].content else "90", name="local-strong")
    wf = Workflow.load(EXAMPLES / "model-routing" / "workflow.yaml", models={"local": small, "local-strong": strong})
    easy = await wf.run(wf.example)
    assert easy.status == "ok" and easy.text.startswith("90 (") and strong.calls == 0  # easy: small explains, small samples agree
    store = SQLiteStore(tmp_path / "t.db")
    hard = await wf.run("Li has 48 shells. Li gives half of them to Noor, then buys 8 more, then loses 5. How many now?", store=store)
    assert hard.text.startswith("27 (") and strong.calls == 2  # hard: the router sends the explanation to the strong model,
    ds = {d.router: d for d in store.decisions()}                # and the small samples disagree, so the cascade escalates
    assert ds["auto"].route == "local-strong" and ds["frugal"].route == "local-strong" and ds["frugal"].outcome == "escalated"
    store.close()


def test_model_router_and_cascade_errors_are_located(tmp_path):
    from turnout import ConfigError

    p = tmp_path / "wf.yaml"
    p.write_text("name: x\nmodel_routers:\n  auto:\n    tiers: {easy: [local], hard: [ghost]}\nsteps:\n  - call: {model: auto}\n")
    with pytest.raises(ConfigError, match=r"wf.yaml:4: model_routers.auto.tiers.hard.0: unknown model 'ghost'"):
        Workflow.load(p)
    p.write_text("name: x\ncascades:\n  c:\n    tiers: [{model: local}, {model: nope}]\nsteps:\n  - call: {model: c}\n")
    with pytest.raises(ConfigError, match=r"wf.yaml:4: cascades.c.tiers.1.model: unknown model 'nope'"):
        Workflow.load(p)
    p.write_text("name: x\nmodel_routers:\n  auto:\n    complexity: {router: nobody}\nsteps:\n  - call: {model: auto}\n")
    with pytest.raises(ConfigError, match=r"model_routers.auto.complexity.router: unknown router 'nobody'"):
        Workflow.load(p)
    p.write_text("name: x\nmodel_routers:\n  auto:\n    tiers: {easy: [local]}\n    min_tier: hard\nsteps:\n  - call: {model: auto}\n")
    with pytest.raises(ConfigError, match=r"wf.yaml:3: model_routers.auto: .*min_tier 'hard' is not a tier"):
        Workflow.load(p)


async def test_the_billing_agent_looks_up_and_refunds_with_its_tools():
    """examples/billing-agent: the billing route is an agent over two Python tools (invoices.json);
    a scripted model stands in for the embedded one (tests/test_workflow_tools.py runs that)."""
    from turnout._types import ToolCall
    from turnout.testing import ScriptedModel

    def reply(r):
        results = [m.content for m in r.messages if m.role == "tool"]
        if not r.tools or results:
            return f"done: {results[-1] if results else r.messages[-1].content}"
        ask = r.messages[-1].content
        if "refund" in ask:
            return ToolCall("c1", "issue_refund", json.dumps({"number": "INV-1043" if "1043" in ask else "INV-1042", "amount": 10}))
        return ToolCall("c1", "get_invoice", '{"number": "inv-1042"}')

    model = ScriptedModel(default=reply)
    wf = Workflow.load(EXAMPLES / "billing-agent" / "workflow.yaml", models={"local": model})
    res = await wf.run(wf.example)
    assert res.status == "ok" and '"total": 42.5' in res.text and [d.route for _, d in res.decisions] == ["billing"]
    refund = await wf.run("Please refund 10 EUR of invoice INV-1042")
    assert '"refund": "RF-1042-1000"' in refund.text and '"left_to_refund": 32.5' in refund.text
    refused = await wf.run("Please refund 10 EUR of invoice INV-1043")  # open: the tool refuses, the model is told why
    assert "only a paid invoice can be refunded" in refused.text
    assert [s.status for s in refused.steps if s.kind == "tool"] == ["error"]
    other = await wf.run("What are your opening hours?")
    assert [d.route for _, d in other.decisions] == ["general"] and not [s for s in other.steps if s.kind == "tool"]
