"""CascadeRouter: rules first, embeddings next, the LLM only for the ambiguous rest."""

from __future__ import annotations

import json

from turnout.routing import CascadeRouter, LLMRouter, Route, RuleRouter, SemanticRouter, Stage
from turnout.testing import FakeEmbedder, ScriptedModel

ROUTES = [
    Route("billing", "invoices", utterances=("charged twice on my invoice", "card payment failed"), keywords=("invoice",)),
    Route("technical", "bugs", utterances=("the app crashes on startup", "error when uploading files"), keywords=("crash",)),
    Route("general", "anything else", utterances=("hello there", "what are your opening hours")),
    Route("human", "a person"),
]


def cascade(llm_reply="general", sem_threshold=0.9, emb=None):
    llm_model = ScriptedModel(default=json.dumps({"route": llm_reply}), name="llm")
    rules = RuleRouter(ROUTES, name="rules")
    sem = SemanticRouter(ROUTES, emb or FakeEmbedder(), temperature=0.02, escalation="human", name="semantic")
    llm = LLMRouter(ROUTES, llm_model, escalation="human", name="llm")
    c = CascadeRouter([Stage(rules, 1.0), Stage(sem, sem_threshold), Stage(llm, 0.5)], fallback="general", escalation="human")
    return c, llm_model


async def test_rules_decide_clear_cases_without_other_stages():
    c, llm = cascade()
    d = await c.decide("where is my invoice")
    assert (d.route, d.stage, d.kind) == ("billing", "rules", "cascade") and llm.calls == 0


async def test_semantic_decides_when_rules_abstain():
    c, llm = cascade(sem_threshold=0.5)
    d = await c.decide("the app crashes on startup every time")  # "crashes" is not the keyword "crash"
    assert d.route == "technical" and d.stage == "semantic" and llm.calls == 0
    assert "rules: abstain" in d.reason


async def test_llm_only_for_the_ambiguous():
    c, llm = cascade(llm_reply="billing", sem_threshold=0.999)
    d = await c.decide("something vague about money")
    assert d.route == "billing" and d.stage == "llm" and llm.calls == 1


async def test_nobody_sure_escalates_with_the_best_candidate_recorded():
    c, llm = cascade(llm_reply="none", sem_threshold=0.999)
    d = await c.decide("something vague about money")
    assert d.route == "human" and d.outcome == "escalated" and d.chosen in ("billing", "technical", "general")
    assert "no stage was sure" in d.reason


async def test_all_abstain_falls_back():
    c = CascadeRouter([Stage(RuleRouter(ROUTES, name="rules"), 1.0)], fallback="general", escalation="human")
    d = await c.decide("nothing matches")
    assert d.route == "general" and d.outcome == "fallback" and d.chosen is None


async def test_llm_failure_does_not_break_the_cascade():
    from turnout.errors import ProviderUnavailable

    c, llm = cascade(sem_threshold=0.999)
    llm.default = ProviderUnavailable("down")
    d = await c.decide("something vague")
    assert d.route in ("human", "general") and "llm: abstain" in d.reason


async def test_batch_goes_stage_by_stage():
    emb = FakeEmbedder()
    c, llm = cascade(llm_reply="general", sem_threshold=0.5, emb=emb)
    await c.stages[1].router.prepare()
    calls = emb.calls
    ds = await c.decide_many(["my invoice", "the app crashes on startup every time", "error when uploading files", "hello there"])
    assert [d.stage for d in ds[:2]] == ["rules", "semantic"]
    assert emb.calls == calls + 1  # the three rule misses were embedded together
    assert all(d.latency_s >= 0 for d in ds)


async def test_targets_are_reachable_from_the_decision():
    from turnout.routing import target_of

    routes = [Route("billing", keywords=("invoice",), target={"handler": "billing-prompt"}), Route("general")]
    c = CascadeRouter([Stage(RuleRouter(routes, name="rules"), 1.0)], fallback="general")
    d = await c.decide("my invoice")
    assert target_of(c, d) == {"handler": "billing-prompt"} and c.routes["billing"].target_kind == "handler"
    assert target_of(c, await c.decide("hello")) == {}
