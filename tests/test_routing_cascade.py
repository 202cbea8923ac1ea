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


def shortlisting(reply: str, k: int = 2):
    model = ScriptedModel(default=json.dumps({"route": reply}), name="llm")
    sem = SemanticRouter(ROUTES, FakeEmbedder(), temperature=1.0, escalation="human", name="semantic")  # never sure
    llm = LLMRouter(ROUTES, model, escalation="human", examples=2, name="llm")
    c = CascadeRouter([Stage(sem, 0.999), Stage(llm, 0.5, shortlist=k)], fallback="general", escalation="human")
    return c, sem, model


def offered(req) -> list[str]:
    return req.response_format.schema["properties"]["route"]["enum"]


async def test_a_shortlisting_llm_stage_chooses_among_the_semantic_stage_best_routes():
    text = "my card payment failed on the invoice"
    c, sem, model = shortlisting("billing")
    ranked = sorted((s := (await sem.decision(text)).scores), key=s.__getitem__, reverse=True)
    d = await c.decide(text)
    assert offered(model.history[0]) == [*ranked[:2], "none"]  # best first; the escalation route never offered
    system = model.history[0].messages[0].content
    for name in ranked[2:]:  # the other routes' descriptions and examples are not in the prompt
        assert f"- {name}:" not in system and all(u not in system for u in c.routes[name].utterances)
    assert ("among 2 shortlisted" in d.reason) and d.stage == "llm" and (d.route == "billing") == ("billing" in ranked[:2])
    # the batch path narrows each input by its own ranking
    texts = [text, "the app crashes on startup", "hello, what are your opening hours"]
    await c.decide_many(texts)
    for t, req in zip(texts, model.history[1:], strict=True):
        r = sorted((s := (await sem.decision(t)).scores), key=s.__getitem__, reverse=True)
        assert req.messages[-1].content == t and offered(req) == [*r[:2], "none"]


async def test_a_label_outside_the_shortlist_is_an_abstention():
    text = "my card payment failed on the invoice"
    c, sem, _ = shortlisting("billing", k=1)
    s = (await sem.decision(text)).scores
    top = max(s, key=s.__getitem__)
    other = next(n for n in ("billing", "technical", "general") if n != top)
    c2, _, model = shortlisting(other, k=1)
    d = await c2.decide(text)
    assert offered(model.history[0]) == [top, "none"]
    assert "llm: abstain" in d.reason and d.route in ("human", "general")


async def test_shortlists_come_from_yaml_and_are_refused_where_they_mean_nothing():
    import pytest

    from turnout._errors import ConfigError
    from turnout.routing import build_router

    routes = {r.name: {"description": r.description, "utterances": list(r.utterances)} for r in ROUTES}
    spec = {"router": "cascade", "escalation": "human", "routes": routes, "semantic": {"temperature": 1.0},
            "stages": [{"router": "semantic", "threshold": 0.999}, {"router": "llm", "threshold": 0.5, "shortlist": 2}]}
    model = ScriptedModel(default=json.dumps({"route": "general"}), name="llm")
    c = build_router(spec, model=model, embedder=FakeEmbedder())
    await c.decide("hello there, are you open")
    assert len(offered(model.history[0])) == 3
    with pytest.raises(ConfigError, match="shortlist is for an llm stage"):
        build_router({**spec, "stages": [{"router": "semantic", "shortlist": 2}]}, model=model, embedder=FakeEmbedder())
    with pytest.raises(ConfigError, match="cannot take a shortlist"):
        CascadeRouter([Stage(RuleRouter(ROUTES, name="rules"), 1.0, shortlist=2)])
