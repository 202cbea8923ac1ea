"""The fan-out engine: order, cap, policies, timeouts, deadline, real cancellation, budget check."""

from __future__ import annotations

import asyncio

import pytest

from turnout import BudgetExceeded, ConfigError, OpenAICompatible, Request
from turnout.parallel import FanoutError, Quorum, fan_out
from turnout.policies import BudgetLedger
from turnout.testing import FunctionModel, MockServer, ScriptedModel


def delayed(value, delay, fail=False):
    async def run():
        await asyncio.sleep(delay)
        if fail:
            raise ValueError(f"branch {value} failed")
        return value

    return run


async def test_results_come_back_in_input_order():
    branches = [delayed(i, (10 - i) * 0.005) for i in range(10)]  # later branches finish first
    r = await fan_out(branches)
    assert [e.index for e in r.envelopes] == list(range(10)) and r.values == list(range(10)) and r.ok


async def test_concurrency_cap_is_respected():
    model = ScriptedModel(default="ok", latency=0.02)
    r = await fan_out([lambda: model.complete(Request.of("x")) for _ in range(40)], concurrency=5)
    assert model.max_active == 5 and r.max_concurrent == 5 and len(r.values) == 40


async def test_best_effort_collects_every_outcome():
    r = await fan_out([delayed(0, 0.01), delayed(1, 0.001, fail=True), delayed(2, 0.02)])
    assert [e.status for e in r.envelopes] == ["ok", "error", "ok"]
    assert isinstance(r.envelopes[1].error, ValueError) and not r.ok
    with pytest.raises(FanoutError) as ei:
        r.raise_for_errors()
    assert isinstance(ei.value, ExceptionGroup) and len(ei.value.exceptions) == 1


async def test_fail_fast_cancels_siblings():
    finished: list[int] = []

    def slow(i):
        async def run():
            await asyncio.sleep(5)
            finished.append(i)
            return i
        return run

    r = await fan_out([slow(0), delayed(1, 0.01, fail=True), slow(2), slow(3)], policy="fail_fast", concurrency=3)
    assert finished == []  # the 5 s siblings were cancelled, none ran to its end
    assert [e.status for e in r.envelopes] == ["cancelled", "error", "cancelled", "cancelled"]
    assert r.stopped_early and "failed" in r.stop_reason
    assert r.envelopes[3].latency_s == 0.0  # never started: no call was made


async def test_quorum_stops_early_and_cancels_the_rest():
    model = ScriptedModel(default="ok")
    delays = [0.01, 0.02, 0.03, 3, 3, 3]

    def call(d):
        async def run():
            await asyncio.sleep(d)
            return await model.complete(Request.of("x"))
        return run

    r = await fan_out([call(d) for d in delays], policy=Quorum(3))
    assert [e.status for e in r.envelopes] == ["ok", "ok", "ok", "cancelled", "cancelled", "cancelled"]
    assert model.calls == 3 and "quorum" in r.stop_reason


async def test_timeouts_become_envelopes():
    # bounds wide enough for a loaded machine: the fast branch is instant, the slow one would take 30 s
    r = await fan_out([delayed(0, 0), delayed(1, 30.0)], timeout=1.0)
    assert [e.status for e in r.envelopes] == ["ok", "timeout"] and r.envelopes[1].latency_s >= 0.99


async def test_overall_deadline_returns_partial_results():
    r = await fan_out([delayed(i, 0 if i < 2 else 30) for i in range(6)], concurrency=4, deadline=1.0)
    assert r.values == [0, 1]
    assert [e.status for e in r.envelopes[2:]] == ["timeout"] * 4 and "deadline" in r.stop_reason


async def test_caller_cancellation_propagates_and_leaves_no_tasks():
    before = len(asyncio.all_tasks())
    task = asyncio.ensure_future(fan_out([delayed(i, 5) for i in range(4)]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


async def test_cancelled_branches_stop_their_http_calls():
    async with MockServer(latency=2.0, handler_cancellation=True) as srv:
        fast = OpenAICompatible("fast", base_url=srv.url)
        srv_fast = MockServer()
        await srv_fast.start()
        quick = OpenAICompatible("quick", base_url=srv_fast.url)
        branches = [lambda: quick.complete(Request.of("a")), lambda: quick.complete(Request.of("b"))] + \
                   [lambda: fast.complete(Request.of("slow")) for _ in range(3)]
        r = await fan_out(branches, policy=Quorum(2))
        # the quorum did not wait for the 2 s branches: they are cancelled, not answered
        assert [e.status for e in r.envelopes] == ["ok", "ok", "cancelled", "cancelled", "cancelled"]
        for _ in range(1500):  # the server sees the three slow requests abandoned (a bound, not a timing window)
            if srv.cancelled == 3:
                break
            await asyncio.sleep(0.02)
        assert srv.cancelled == 3
        await fast.aclose()
        await quick.aclose()
        await srv_fast.stop()


async def test_cost_and_tokens_are_carried():
    from turnout import Price

    m = FunctionModel(lambda r: "one two three", price=Price(1000, 1000))
    r = await fan_out([lambda: m.complete(Request.of("x" * 40)) for _ in range(3)])
    assert all(e.cost_usd > 0 and e.output_tokens > 0 for e in r.envelopes)
    assert r.cost_usd == pytest.approx(sum(v.cost_usd for v in r.values))


async def test_budget_check_refuses_before_launch():
    ledger = BudgetLedger(0.01)
    ran = []
    with pytest.raises(BudgetExceeded):
        await fan_out([lambda: ran.append(1)], ledger=ledger, estimated_cost=0.02)
    assert ran == []


async def test_budget_check_uses_the_runs_budget_in_the_current_scope():
    from turnout._scope import spend_scope
    from turnout.policies.spend import Budget, SpendControl

    spend = SpendControl([Budget(0.05, scope="run")])
    ran = []
    with spend_scope(run="r1"):
        h = await spend.reserve(0.04)  # this run has already spent (or holds) $0.04 of its $0.05
        await spend.settle(h, 0.04)
        with pytest.raises(BudgetExceeded):
            await fan_out([lambda: ran.append(1)], ledger=spend, estimated_cost=0.02)
        assert ran == []
        await fan_out([lambda: ran.append(1)], ledger=spend, estimated_cost=0.01)  # fits: runs, holds nothing after
        assert ran == [1] and (await spend.status())[0].reserved_usd == 0
    with spend_scope(run="r2"):  # another run has its own $0.05
        await fan_out([lambda: ran.append(2)], ledger=spend, estimated_cost=0.02)
    assert ran == [1, 2]


async def test_bad_arguments_and_empty_input():
    assert (await fan_out([])).envelopes == []
    with pytest.raises(ConfigError):
        await fan_out([delayed(0, 0)], concurrency=0)
    with pytest.raises(ConfigError):
        await fan_out([delayed(0, 0)], policy=Quorum(3))
