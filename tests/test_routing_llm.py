"""LLMRouter with scripted models: constrained labels, normalisation, abstentions, confidence, cost."""

from __future__ import annotations

import json
import math

import pytest

from turnout import Completion, Price, Request
from turnout.errors import ProviderTimeout, ProviderUnavailable
from turnout.models import Usage
from turnout.routing import LLMRouter, Route
from turnout.testing import FunctionModel, ScriptedModel

ROUTES = [
    Route("billing", "invoices and charges", synonyms=("payments", "invoice")),
    Route("technical_support", "bugs and errors"),
    Route("general", "anything else"),
    Route("human", "a person"),
]


def answer(label: str) -> str:
    return json.dumps({"route": label})


def make(model, **kw):
    return LLMRouter(ROUTES, model, fallback="general", escalation="human", **kw)


async def test_asks_with_an_enum_schema_and_descriptions():
    m = ScriptedModel(default=answer("billing"))
    d = await make(m).decide("I was charged twice")
    assert d.route == "billing" and d.kind == "llm" and d.outcome == "matched"
    req: Request = m.history[0]
    enum = req.response_format.schema["properties"]["route"]["enum"]
    assert enum == ["billing", "technical_support", "general", "none"]  # the escalation route is not offered
    assert "invoices and charges" in req.messages[0].content and req.messages[-1].content == "I was charged twice"


@pytest.mark.parametrize(("label", "route"), [(" Billing ", "billing"), ("technical-support", "technical_support"),
                                              ("Technical Support", "technical_support"), ("payments", "billing")])
async def test_labels_are_normalised(label, route):
    d = await make(ScriptedModel(default=answer(label))).decide("x")
    assert d.route == route


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (answer("shipping"), "not a route"),  # outside the route set: never a KeyError, never a default in disguise
        (answer("none"), "none fits"),
        ("this is not json", "unparseable"),
        (json.dumps(["billing"]), "not a route"),
        (ProviderUnavailable("down"), "LLM error: ProviderUnavailable"),
        (ProviderTimeout("slow"), "LLM error: ProviderTimeout"),
    ],
)
async def test_anything_else_is_a_recorded_abstention(reply, why):
    d = await make(ScriptedModel(default=reply)).decide("hello")
    assert d.chosen is None and d.route == "general" and d.outcome == "fallback"
    assert why in d.reason


async def test_confidence_from_logprobs():
    lp = [("{\"", -0.01, ()), ("route", -0.01, ()), ("\":", -0.01, ()), (" \"", -0.01, ()),
          ("bill", math.log(0.8), (("bill", math.log(0.8)), ("tech", math.log(0.15)))), ("ing", math.log(0.9), ()),
          ("\"}", -0.01, ())]
    m = ScriptedModel(default=Completion(answer("billing"), "m", logprobs=lp))
    d = await make(m).decide("x")
    assert d.route == "billing" and d.confidence == pytest.approx(0.72, abs=1e-6)
    assert m.history[0].logprobs == 3


async def test_low_confidence_escalates():
    lp = [("{\"route\": \"", -0.01, ()), ("billing", math.log(0.4), ()), ("\"}", -0.01, ())]
    d = await make(ScriptedModel(default=Completion(answer("billing"), "m", logprobs=lp)), escalate_below=0.6).decide("x")
    assert d.route == "human" and d.outcome == "escalated" and d.chosen == "billing"


async def test_samples_agreement_is_the_confidence_and_costs_add_up():
    replies = iter([answer("billing"), answer("billing"), answer("technical_support")])
    m = FunctionModel(lambda r: Completion(next(replies), "m", usage=Usage(10, 2), cost_usd=0.001), price=Price(1, 1))
    d = await make(m, samples=3).decide("x")
    assert d.route == "billing" and d.confidence == pytest.approx(2 / 3)
    assert d.scores == {"billing": pytest.approx(0.6667, abs=1e-3), "technical_support": pytest.approx(0.3333, abs=1e-3)}
    assert d.cost_usd == pytest.approx(0.003) and m.calls == 3
    assert len({r.seed for r in m.history}) == 3 and all(r.temperature > 0 for r in m.history)


async def test_batch_and_empty_input():
    m = ScriptedModel(default=answer("billing"))
    ds = await make(m).decide_many(["a", "", "b"])
    assert [d.route for d in ds] == ["billing", "general", "billing"] and m.calls == 2


async def test_examples_in_the_prompt_and_concurrency_from_the_spec():
    from turnout.routing import build_router

    spec = {"router": "llm", "llm": {"examples": 2, "concurrency": 3},
            "routes": {"billing": {"description": "invoices", "utterances": ["I was charged twice", "send my invoice", "VAT number"]},
                       "general": {}}}
    in_flight = peak = 0

    async def fn(req):
        nonlocal in_flight, peak
        import asyncio

        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)  # let the others in: the cap, not the scheduling, bounds them
        in_flight -= 1
        return answer("billing")

    m = FunctionModel(fn)
    r = build_router(spec, model=m)
    assert r.concurrency == 3 and r.examples == 2
    system = r.system
    assert '"I was charged twice"' in system and '"send my invoice"' in system and "VAT number" not in system
    ds = await r.decide_many([f"message {i}" for i in range(12)])
    assert all(d.route == "billing" for d in ds) and peak == 3
    assert LLMRouter(ROUTES, ScriptedModel(default=answer("billing"))).concurrency == 8  # no slots known: 8
