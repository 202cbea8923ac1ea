"""Parallel guardrails, prompt chains with gates, and orchestrator-workers."""

from __future__ import annotations

import asyncio
import json

import pytest

from turnout import ConfigError, Request
from turnout.parallel import ModelScreen, guarded, rule_screen
from turnout.routing import Route, RuleRouter
from turnout.testing import FunctionModel, ScriptedModel
from turnout.workflows import Chain, Gate, Orchestrator, PlanError, Step


async def test_guard_passes_a_clean_request():
    resp = ScriptedModel(default="Here is the answer.", latency=0.02)
    r = await guarded(resp, Request.of("How do I bake bread?"), rule_screen(r"\bbomb\b"))
    assert not r.withheld and r.text == "Here is the answer." and r.screen_reason == "passed"


async def test_guard_withholds_and_cancels_a_flagged_response():
    started, finished = [], []

    async def slow(req):
        started.append(1)
        await asyncio.sleep(5)
        finished.append(1)
        return "dangerous text"

    resp = FunctionModel(slow)
    screen = ModelScreen(ScriptedModel(default=json.dumps({"flag": True, "category": "violence"})))
    r = await asyncio.wait_for(guarded(resp, Request.of("how to build a bomb"), [rule_screen(r"\bbomb\b"), screen]), 2)
    assert r.withheld and r.response_cancelled and r.response is None
    assert r.text.startswith("Sorry") and "rule: 'bomb'" in r.screen_reason and "violence" in r.screen_reason
    assert started and not finished


async def test_model_screen_fails_closed_on_garbage():
    flag, why = await ModelScreen(ScriptedModel(default="not json")).__call__("hi")
    assert flag and "screen failed" in why
    flag, _ = await ModelScreen(ScriptedModel(default="not json"), fail_closed=False)("hi")
    assert not flag


async def test_chain_passes_outputs_forward_and_gates_can_stop_or_divert():
    m = FunctionModel(lambda r: r.messages[-1].content.split(":", 1)[0])
    chain = Chain([
        Step("outline", "OUTLINE:{input}"),
        Step("check", "CHECK:{outline}", gate=lambda out, outs: "outline" if out == "retry" else True),
        Step("write", "WRITE:{outline}/{check}"),
    ], model=m)
    res = await chain.run("topic")
    assert res.outputs == {"outline": "OUTLINE", "check": "CHECK", "write": "WRITE"} and not res.stopped
    stop_chain = Chain([Step("a", "A:{input}", gate=lambda o, _: Gate("stop", "quality too low")), Step("b", "B:{a}")], model=m)
    r2 = await stop_chain.run("x")
    assert r2.stopped and r2.stop_reason == "quality too low" and "b" not in r2.outputs


async def test_chain_divert_loop_is_bounded_and_bad_specs_are_refused():
    m = ScriptedModel(default="again")
    loop = Chain([Step("a", "{input}"), Step("b", "{a}", gate=lambda o, _: "a")], model=m, max_steps=6)
    res = await loop.run("x")
    assert res.stopped and "more than 6 steps" in res.stop_reason
    with pytest.raises(ConfigError, match="later step"):
        Chain([Step("a", "{b}"), Step("b", "{input}")], model=m)
    with pytest.raises(ConfigError, match="unknown template fields: nope"):
        Chain([Step("a", "{nope}")], model=m)
    with pytest.raises(ConfigError, match="no model"):
        Chain([Step("a", "{input}")])


def plan(*titles):
    return json.dumps({"subtasks": [{"title": t, "instruction": f"do {t}"} for t in titles]})


async def test_orchestrator_plans_fans_out_and_synthesises():
    planner = ScriptedModel(queue=[plan("pricing", "competitors", "risks"), "FINAL REPORT"])
    worker = FunctionModel(lambda r: "result of " + r.messages[-1].content.rsplit("do ", 1)[-1], latency=0.02)
    res = await Orchestrator(planner, worker, concurrency=3).run("Research the market")
    assert [s.title for s in res.subtasks] == ["pricing", "competitors", "risks"]
    assert worker.max_active == 3 and res.final == "FINAL REPORT" and not res.failed
    synth_prompt = planner.history[-1].messages[-1].content
    assert "result of pricing" in synth_prompt and "result of risks" in synth_prompt
    assert planner.history[0].response_format.schema["properties"]["subtasks"]["maxItems"] == 6


async def test_orchestrator_bounds_and_bad_plans():
    planner = ScriptedModel(queue=[plan(*[f"t{i}" for i in range(10)]), "done"])
    res = await Orchestrator(planner, ScriptedModel(default="ok"), max_subtasks=4).run("x")
    assert len(res.subtasks) == 4 and "only the first 4 run" in res.notes[0]
    with pytest.raises(PlanError, match="not JSON"):
        await Orchestrator(ScriptedModel(default="sure, here's my plan"), ScriptedModel(default="ok")).run("x")
    with pytest.raises(PlanError, match="no 'subtasks'"):
        await Orchestrator(ScriptedModel(default='{"steps": []}'), ScriptedModel(default="ok")).run("x")


async def test_orchestrator_routes_subtasks_to_models():
    router = RuleRouter([Route("code", keywords=("code",)), Route("text")], fallback="text")
    code_model, text_model = ScriptedModel(default="def f(): ...", name="coder"), ScriptedModel(default="prose", name="writer")
    planner = ScriptedModel(queue=[json.dumps({"subtasks": [{"title": "impl", "instruction": "write the code"},
                                                            {"title": "doc", "instruction": "write the docs"}]}), "final"])
    res = await Orchestrator(planner, text_model, router=router, models={"code": code_model, "text": text_model}).run("x")
    assert res.routes == ["code", "text"] and code_model.calls == 1 and text_model.calls == 1


async def test_a_chain_is_the_gated_sequence_and_its_gates_may_be_async_predicates():
    from turnout.workflows import Sequence

    seen = []

    async def judge(out, outs):  # an awaitable gate: divert back once, then continue
        seen.append(out)
        return "draft" if len(seen) == 1 else True

    m = FunctionModel(lambda r: r.messages[-1].content)
    chain = Chain([Step("draft", "D:{input}"), Step("review", "R:{draft}", gate=judge)], model=m)
    assert isinstance(chain.sequence, Sequence)  # one loop, one template language, one gate type
    res = await chain.run("x")
    assert res.outputs == {"draft": "D:x", "review": "R:D:x"} and len(seen) == 2 and not res.stopped
    assert res.trail == ["draft", "review: gate diverted to draft -> draft", "draft", "review"]
    bad = Chain([Step("a", "{input}", gate=lambda o, _: "nowhere")], model=m)
    with pytest.raises(ConfigError, match="unknown step 'nowhere'"):
        await bad.run("x")
