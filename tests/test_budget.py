"""Budgeted: reserve before, settle after; concurrency cannot overspend by more than one call."""

from __future__ import annotations

import asyncio
import random

import pytest

from turnout import BudgetExceeded, Completion, Price, Request
from turnout.errors import ProviderUnavailable
from turnout.models import Usage
from turnout.policies import Budgeted, BudgetLedger
from turnout.testing import FunctionModel, ScriptedModel

PRICE = Price(1000.0, 2000.0)  # USD per 1M tokens: big numbers so each call costs something visible


async def test_concurrent_callers_never_overspend_by_more_than_one_call():
    rng = random.Random(1)
    max_call_cost = 0.0

    async def fn(req: Request) -> Completion:
        nonlocal max_call_cost
        await asyncio.sleep(rng.uniform(0, 0.01))
        out = rng.randint(1, req.max_tokens or 1)  # real usage varies but stays within max_tokens
        u = Usage(20, out)
        cost = PRICE.cost(u)
        max_call_cost = max(max_call_cost, cost)
        return Completion("x" * out, "f", usage=u, cost_usd=cost)

    model = FunctionModel(fn, price=PRICE)
    ledger = BudgetLedger(0.5)
    m = Budgeted(model, ledger)

    async def one(i: int) -> str:
        try:
            await m.complete(Request.of("y" * 60, max_tokens=50))
            return "ok"
        except BudgetExceeded:
            return "refused"

    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert results.count("ok") > 0 and results.count("refused") > 0
    assert ledger.spent <= ledger.limit + max_call_cost
    assert ledger.reserved == pytest.approx(0.0)
    assert model.calls == results.count("ok")  # refused calls never reached the model


async def test_refusal_happens_before_the_call():
    m = ScriptedModel(default="ok", price=PRICE)
    ledger = BudgetLedger(0.0001)
    with pytest.raises(BudgetExceeded) as ei:
        await Budgeted(m, ledger).complete(Request.of("hello", max_tokens=100))
    assert m.calls == 0 and "would be exceeded" in str(ei.value)


async def test_failed_call_releases_its_reservation():
    m = ScriptedModel(queue=[ProviderUnavailable("down")], price=PRICE)
    ledger = BudgetLedger(1.0)
    with pytest.raises(ProviderUnavailable):
        await Budgeted(m, ledger).complete(Request.of("x", max_tokens=10))
    assert ledger.reserved == 0 and ledger.spent == 0


async def test_settles_real_cost_and_fires_alerts_once():
    fired: list[float] = []
    ledger = BudgetLedger(0.01, alerts=(0.5, 0.9), on_alert=lambda ledger, f: fired.append(f))
    m = Budgeted(ScriptedModel(default="ok", price=Price(1, 1)), ledger)
    for _ in range(3):
        c = await m.complete(Request.of("x" * 4000, max_tokens=5))  # ~1001 in + 1 out tokens ≈ $0.001
        assert c.cost_usd > 0
    assert ledger.spent == pytest.approx(3 * c.cost_usd)
    assert fired == []
    while True:
        try:
            await m.complete(Request.of("x" * 4000, max_tokens=5))
        except BudgetExceeded:
            break
    assert fired == [0.5, 0.9]


async def test_stream_settles_on_completion():
    ledger = BudgetLedger(1.0)
    m = Budgeted(ScriptedModel(default="a b c", price=PRICE), ledger)
    chunks = [c async for c in m.stream(Request.of("x", max_tokens=10))]
    assert ledger.spent == pytest.approx(chunks[-1].cost_usd) and ledger.reserved == 0


async def test_a_refusal_by_any_budget_leaves_nothing_held_on_the_others_for_calls_streams_and_encoders():
    """One reservation over every budget a call is charged to (``reserve_all``): the model door, the
    stream door and the encoder door each take it, and a later budget's refusal frees the earlier ones."""
    from turnout._scope import spend_scope
    from turnout.policies.embedding import PolicyEmbedder
    from turnout.testing import FakeEmbedder

    roomy, tight = BudgetLedger(10.0), BudgetLedger(1e-9)
    emb = PolicyEmbedder(FakeEmbedder(), price=Price(1000.0, 0.0), spend=roomy)
    doors = {
        "call": lambda: Budgeted(ScriptedModel(default="ok", price=PRICE), roomy).complete(Request.of("hello")),
        "stream": lambda: Budgeted(ScriptedModel(default="ok", price=PRICE), roomy).open_stream(Request.of("hello")),
        "encoder": lambda: emb.embed(["hello"]),
    }
    for door, call in doors.items():
        with spend_scope(meters=(tight,)), pytest.raises(BudgetExceeded):
            await call()
        assert (roomy.reserved, roomy.spent, tight.reserved) == (0, 0, 0), door
    with spend_scope(meters=(BudgetLedger(10.0),)):  # both roomy: each door is charged to both
        await doors["call"]()
        await emb.embed(["hello"])
    assert roomy.spent > 0 and roomy.reserved == 0
