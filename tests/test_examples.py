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
