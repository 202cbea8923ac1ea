"""Spend control: budgets per run, workflow, key, team, model and period; reserve-then-settle under
100 concurrent requests; alerts; period roll-over seeded from the store; fallback past a spent model."""

from __future__ import annotations

import asyncio

import pytest

from turnout import BudgetExceeded, Catalog, ConfigError, ModelSpec, Price, Request
from turnout.models.catalog import PolicySpec
from turnout.policies import Budgeted, spend_scope
from turnout.policies.spend import Budget, SpendControl, period_start
from turnout.store import SQLiteStore
from turnout.testing import FunctionModel

PRICE = Price(1_000_000, 1_000_000)  # $1 a token: easy arithmetic
REQ = Request.of("abcd", max_tokens=4)  # estimate: 1 + 4 (message) + 4 = $9; real: 1 in + 1 out = $2


def model(name="m", latency=0.01):
    return FunctionModel(lambda r: "ok", name=name, price=PRICE, latency=latency)


async def burst(m, n=100, **scope):
    async def one():
        with spend_scope(**scope):
            try:
                await m.complete(REQ)
                return True
            except BudgetExceeded:
                return False

    return await asyncio.gather(*(one() for _ in range(n)))


@pytest.mark.parametrize("scope, kw", [("global", {}), ("model", {}), ("key", {"key": "k1"}), ("team", {"team": "ml"}),
                                       ("workflow", {"workflow": "triage"}), ("run", {"run": "r1"})])
async def test_100_concurrent_requests_never_overspend(scope, kw):
    spend = SpendControl([Budget(100.0, scope, "*")])
    inner = model()
    ok = await burst(Budgeted(inner, spend), 100, **kw)
    st = (await spend.status())
    assert len(st) == 1 and st[0].spent_usd <= 100.0 and st[0].reserved_usd == 0
    # reservations ($9 each) are taken before any call starts: 11 fit in $100 while they are in flight
    assert sum(ok) == inner.calls and 11 <= sum(ok) <= 50
    assert st[0].spent_usd == pytest.approx(2.0 * sum(ok))


async def test_budgets_apply_only_to_their_member_and_each_member_has_its_own_ledger():
    spend = SpendControl([Budget(20.0, "key", "*"), Budget(1000.0, "team", "ml")])
    m = Budgeted(model(), spend)
    ok_a, ok_b = await asyncio.gather(burst(m, 20, key="a", team="ml"), burst(m, 20, key="b"))
    assert sum(ok_a) >= 2 and sum(ok_b) >= 2
    labels = {s.label: s for s in (await spend.status())}
    assert set(labels) == {"key:* [a]", "key:* [b]", "team:ml"}
    assert labels["team:ml"].spent_usd == labels["key:* [a]"].spent_usd  # b's calls were not the team's
    outside = await burst(m, 3)  # no key in scope: the key budgets do not apply, nothing else limits
    assert all(outside)


async def test_one_refusal_releases_every_other_reservation():
    spend = SpendControl([Budget(1000.0, "global"), Budget(5.0, "model", "m")])
    m = Budgeted(model(), spend)
    with pytest.raises(BudgetExceeded, match="model:m"):
        await m.complete(REQ)
    g = next(s for s in (await spend.status()) if s.budget.scope == "global")
    assert g.reserved_usd == 0 and g.spent_usd == 0 and g.calls == 0


async def test_alerts_fire_once_per_threshold():
    fired = []
    spend = SpendControl([Budget(20.0, "global", alerts=(0.25, 0.5))], on_alert=lambda st, f: fired.append((st.label, f)))
    m = Budgeted(model(latency=0), spend)
    for _ in range(6):
        await m.complete(REQ)  # $2 each: 25% after 3 calls, 50% after 5
    assert fired == [("global", 0.25), ("global", 0.5)]


async def test_alert_default_is_a_log_line(caplog):
    spend = SpendControl([Budget(8.0, "model", "m", alerts=(0.25,))])
    await Budgeted(model(latency=0), spend).complete(Request.of("abcd", max_tokens=1))  # reserves $6, costs $2
    assert "budget model:m: 25% used" in caplog.text


async def test_period_budget_rolls_over_and_starts_from_recorded_spend(tmp_path):
    store = SQLiteStore(tmp_path / "t.db")
    now = [period_start("day", 1_790_000_000.0) + 3600]
    cat = Catalog([ModelSpec("m", "fake", price=PRICE, policies=PolicySpec(retry_attempts=1))], include_embedded=False,
                  adapters={"fake": lambda spec, env: model("m", 0)})
    with store.run("wf"):
        for _ in range(3):
            await cat.model("m").complete(REQ)  # $6 recorded in the store (today, by the real clock)
    import time

    now[0] = time.time()
    spend = SpendControl([Budget(10.0, "model", "m", period="day")], store=store, clock=lambda: now[0])
    m = Budgeted(model("m", 0), spend)
    with pytest.raises(BudgetExceeded):  # $6 already spent today + $9 estimate > $10
        await m.complete(REQ)
    assert (await spend.model_limits("m"))[0].spent_usd == pytest.approx(6.0)
    now[0] += 86_400  # tomorrow: a fresh ledger
    await m.complete(REQ)
    assert (await spend.model_limits("m"))[0].spent_usd == pytest.approx(2.0)
    store.close()


def test_period_starts_in_utc():
    t = 1_795_000_000.0  # 2026-11-18 (a Wednesday) 06:13:20 UTC
    assert period_start("day", t) == 1_794_960_000.0
    assert period_start("week", t) == 1_794_960_000.0 - 2 * 86_400
    assert period_start("month", t) == 1_793_491_200.0
    assert period_start(None, t) == 0.0


async def test_store_run_and_workflow_run_set_the_scope(tmp_path):
    store = SQLiteStore(tmp_path / "t.db")
    spend = SpendControl([Budget(100.0, "run"), Budget(100.0, "workflow", "wf"), Budget(100.0, "key", "k9")])
    m = Budgeted(model(latency=0), spend)
    with store.run("wf", tags={"key": "k9"}) as run_id:
        await m.complete(REQ)
    labels = {s.label for s in (await spend.status())}
    assert labels == {f"run:* [{run_id}]", "workflow:wf", "key:k9"}
    assert store.spend(key="k9") == 0.0  # m was not traced; the store only has what Traced calls recorded
    store.close()


async def test_a_spent_model_budget_falls_back_to_the_next_member():
    spend = SpendControl([Budget(5.0, "model", "primary")])
    made = {}

    def factory(spec, env):
        made[spec.name] = model(spec.name, 0)
        return made[spec.name]

    cat = Catalog(
        [ModelSpec("primary", "fake", price=PRICE, policies=PolicySpec(retry_attempts=1, fallback=("backup",))),
         ModelSpec("backup", "fake", price=PRICE, policies=PolicySpec(retry_attempts=1))],
        include_embedded=False, adapters={"fake": factory}, spend=spend,
    )
    c = await cat.model("primary").complete(REQ)
    assert c.model == "backup" and made["primary"].calls == 0


async def test_when_every_member_is_over_budget_the_budget_error_is_raised():
    spend = SpendControl([Budget(5.0, "global")])
    cat = Catalog(
        [ModelSpec("a", "fake", price=PRICE, policies=PolicySpec(retry_attempts=1, fallback=("b",))),
         ModelSpec("b", "fake", price=PRICE, policies=PolicySpec(retry_attempts=1))],
        include_embedded=False, adapters={"fake": lambda s, e: model(s.name, 0)}, spend=spend,
    )
    with pytest.raises(BudgetExceeded, match="global"):
        await cat.model("a").complete(REQ)


def test_budgets_from_the_catalog_yaml_and_their_errors(tmp_path):
    p = tmp_path / "models.yaml"
    p.write_text("models:\n  a: {adapter: openai, base_url: 'http://127.0.0.1:9'}\nbudgets:\n"
                 "  - {scope: model, match: a, limit_usd: 5, period: day, alerts: [0.9]}\n  - {scope: key, limit_usd: 1}\n")
    cat = Catalog.load(p, trust_env=False)
    assert [b.label for b in cat.spend.budgets] == ["model:a/day", "key:*"]
    p.write_text("models:\n  a: {adapter: openai}\nbudgets:\n  - {scope: model, limit_usd: 5}\n  - {scope: galaxy, limit_usd: 1}\n")
    with pytest.raises(ConfigError, match=r"models.yaml:5: budgets.1.scope"):
        Catalog.load(p)
    p.write_text("models:\n  a: {adapter: openai}\nbudgets:\n  - {scope: model, limit_usd: 5, period: fortnight}\n")
    with pytest.raises(ConfigError, match=r"models.yaml:4: budgets.0.period"):
        Catalog.load(p)
    with pytest.raises(ConfigError, match="same name"):
        SpendControl([Budget(1, "model", "a"), Budget(2, "model", "a")])
