"""The dashboard at scale: hourly rollups that equal the raw rows (kept by the writer, built by
migration 14 for rows stored before it), windows that start inside an hour, and the indexed runs
search — on SQLite and PostgreSQL (the conformance suite's ``open_store`` fixture)."""

from __future__ import annotations

import math
import random
import time

import pytest
from test_store_conformance import open_store  # noqa: F401 - the fixture: every backend

from turnout.models import Usage
from turnout.policies.trace import CallEvent
from turnout.reports.tables import by_model, by_route
from turnout.routing.base import Decision
from turnout.store.base import DecisionRow

NOW = time.time()


def _fill(store, n: int = 400, seed: int = 3) -> None:
    rng = random.Random(seed)
    for i in range(n):
        tags = {"key": f"k{i % 3}", **({"team": "t1"} if i % 2 else {})} if i % 5 else {}  # some runs have no key
        with store.run(("a", "b")[i % 2], f"ticket {i}: {'refund' if i % 3 else 'password'} please", tags=tags):
            at = NOW - rng.random() * 6 * 3600  # over the last six hours, so windows cut hours
            store.record(CallEvent(model=("cheap", "strong", "local")[i % 3], started_at=at, latency_s=rng.lognormvariate(-2, 1),
                                   ok=i % 7 != 0, usage=Usage(rng.randint(1, 500), rng.randint(1, 200)), cost_usd=rng.random() / 1000,
                                   error_type=None if i % 7 else ("CancelledError" if i % 2 else "ProviderTimeout"), retries=i % 4 == 0,
                                   fallback="local" if i % 5 == 0 else None, cached=i % 6 == 0, saved_usd=0.001 if i % 6 == 0 else 0.0))
            store.record_decision(Decision(route=(None, "billing", "tech")[i % 3], confidence=rng.random(), latency_s=rng.random() / 100),
                                  router="triage")
    store.flush()


def _rank(xs: list[float], q: float) -> float:
    """The nearest-rank percentile (what a histogram's cumulative count finds)."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]


def _check_models(store, since):
    rows, total, slots = store.model_summary(since)
    calls = store.calls(since=since)
    want = {r["model"]: r for r in by_model(calls)}
    assert {r["model"] for r in rows} == set(want)
    for r in rows:
        w = want[r["model"]]
        for k in ("calls", "input_tokens", "output_tokens", "retries", "cancelled"):
            assert r[k] == w[k], (since, r["model"], k)
        for k in ("cost_usd", "error_rate", "fallback_rate", "cache_hit_rate", "saved_usd"):
            assert r[k] == pytest.approx(w[k], abs=1e-6), (since, r["model"], k)
        lat = [c.latency_s * 1000 for c in calls if c.model == r["model"]]
        for k, q in (("latency_p50_ms", 50), ("latency_p95_ms", 95)):  # buckets 10% wide: within 5% of the exact nearest rank
            assert r[k] == pytest.approx(_rank(lat, q), rel=0.05), (since, r["model"], k)
    assert total["calls"] == sum(w["calls"] for w in want.values()) == sum(c for _, c, _ in slots)
    assert sum(cost for _, _, cost in slots) == pytest.approx(sum(w["cost_usd"] for w in want.values()), abs=1e-6)


def _check_keys(store, since):
    """A key's and a team's spend from the hourly key rollups equals the sum over their runs' calls."""
    runs = {r.run_id: r.tags for r in store.runs(limit=None)}
    calls = store.calls(since=since)
    for key, team in (("k0", None), ("k1", None), ("k2", None), (None, "t1"), ("k1", "t1"), ("nobody", None)):
        want = sum(c.cost_usd for c in calls if (key is None or runs[c.run_id].get("key") == key)
                   and (team is None or runs[c.run_id].get("team") == team))
        assert store.spend(key=key, team=team, since=since) == pytest.approx(want, abs=1e-9), (key, team, since)


def _check_routes(store, since):
    rows, conf, n = store.route_summary(since)
    decisions = store.decisions(since=since)
    want = {(r["router"], r["route"]): r for r in by_route(decisions)}
    assert n == len(decisions) == sum(conf) and {(r["router"], r["route"]) for r in rows} == set(want)
    for r in rows:
        w = want[(r["router"], r["route"])]
        assert (r["decisions"], r["low_confidence"], r["outcomes"]) == (w["decisions"], w["low_confidence"], w["outcomes"])
        assert r["mean_confidence"] == pytest.approx(w["mean_confidence"], abs=1e-4) and r["share"] == pytest.approx(w["share"])


@pytest.mark.parametrize("hours", [None, 0.5, 2.25, 5.9])
def test_rollups_equal_the_raw_rows_for_any_window(open_store, hours):  # noqa: F811
    store = open_store()
    _fill(store)
    since = None if hours is None else NOW - hours * 3600  # starts inside an hour: that part is read raw
    _check_models(store, since)
    _check_routes(store, since)
    _check_keys(store, since)
    assert store.count_runs(since) == len(store.runs(limit=None, since=since))


def test_migration_14_builds_the_rollups_of_rows_stored_before_it(open_store):  # noqa: F811
    store = open_store()
    _fill(store, 200)
    db = store._reading()
    for t in ("call_rollups", "call_latency", "decision_rollups", "decision_hist"):  # as a store before migration 14 was
        db.execute(f"DROP TABLE {t}")
    for ix in ("calls_time", "decisions_time", "verdicts_time", "runs_time", "runs_workflow_time", "runs_status_time"):
        db.execute(f"DROP INDEX {ix}")
    db.execute("DELETE FROM schema_migrations WHERE version = 14")
    store.close()
    again = open_store()  # migrates: the rollups are built from the stored rows
    _check_models(again, None)
    _check_routes(again, None)
    _check_models(again, NOW - 1.5 * 3600)


def test_migration_16_builds_the_key_rollups_of_calls_stored_before_it(open_store):  # noqa: F811
    store = open_store()
    _fill(store, 200)
    db = store._reading()
    db.execute("DROP TABLE key_rollups")  # as a store before migration 16 was
    db.execute("DELETE FROM schema_migrations WHERE version = 16")
    store.close()
    again = open_store()
    _check_keys(again, None)
    _check_keys(again, NOW - 2.5 * 3600)


def test_the_runs_search_filters_pages_and_finds_words(open_store):  # noqa: F811
    store = open_store()
    ids = []
    for i in range(30):
        with store.run(("a", "b")[i % 2], f"ticket {i}: {'refund my card' if i % 3 == 0 else 'reset password'}") as rid:
            ids.append(rid)
    store.finish_run(ids[4], status="error")
    store.flush()
    assert [r.run_id for r in store.search_runs(ids[7][:8])] == [ids[7]]
    assert {r.workflow for r in store.search_runs(workflow="b", limit=100)} == {"b"} and len(store.search_runs(workflow="b", limit=100)) == 15
    assert [r.run_id for r in store.search_runs(status="error")] == [ids[4]]
    found = store.search_runs("REFUND my")  # case does not matter
    assert {r.run_id for r in found} == {ids[i] for i in range(30) if i % 3 == 0}
    assert store.search_runs("100%_") == []  # LIKE wildcards are matched literally
    first = store.search_runs(limit=10)
    rest = store.search_runs(limit=100, before=first[-1].started_at)
    assert [r.run_id for r in first + rest] == [r.run_id for r in store.runs(limit=100)]  # pages in order, none twice
    assert store.search_runs("reset password", scan=5) and len(store.search_runs("reset password", scan=5)) <= 5  # a bounded read


def test_low_confidence_reads_the_newest(open_store):  # noqa: F811
    store = open_store()
    with store.run("w"):
        for i in range(50):
            store.record_decision(Decision(route="x", confidence=i / 50), router="r")
    store.flush()
    low = store.low_confidence(limit=5)
    assert all(isinstance(d, DecisionRow) and d.confidence < 0.5 for d in low) and [round(d.confidence, 2) for d in low] == [
        0.48, 0.46, 0.44, 0.42, 0.4]


def test_the_vote_summary_equals_the_verdicts(open_store):  # noqa: F811
    from turnout.reports.tables import by_vote

    class V:
        def __init__(self, a, used):
            self.answer, self.outcome, self.agreement, self.samples_used, self.samples_planned = "x", ("decided", "tie")[used % 2], a, used, 5
            self.abstained, self.counts, self.cost_usd = 0, {"x": used}, 0.0

    store = open_store()
    rng = random.Random(5)
    with store.run("w"):
        for i in range(60):
            store.record_verdict(V(rng.random(), 1 + i % 5), name=("math", "facts")[i % 2])
    store.flush()
    rows, hist = store.vote_summary()
    want = by_vote(store.verdicts())
    assert [(r["name"], r["verdicts"], r["low_agreement"], r["samples_used"], r["samples_saved"], r["outcomes"]) for r in rows] == [
        (w["name"], w["verdicts"], w["low_agreement"], w["samples_used"], w["samples_saved"], w["outcomes"]) for w in want]
    assert [r["mean_agreement"] for r in rows] == pytest.approx([w["mean_agreement"] for w in want], abs=1e-4)
    assert sum(hist) == 60 and hist == [sum(min(9, int(v["agreement"] * 10)) == i for v in store.verdicts()) for i in range(10)]


def test_a_run_started_and_finished_in_one_batch_is_one_row_with_its_end(open_store):  # noqa: F811
    from turnout.store import SQLiteStore

    items = [("run", ("r1", "w", "running", 1.0, "in", "{}", "k1", None)), ("call", ("r1",)), ("finish", ("ok", 2.0, "out", "r1")),
             ("run", ("r2", "w", "running", 1.0, "in", "{}", None, None)), ("finish", ("ok", 2.0, "a", "r2")), ("reopen", ("r2",)),
             ("finish", ("ok", 3.0, "b", "r2")), ("finish", ("error", 4.0, None, "r0"))]
    assert SQLiteStore._grouped(items) == [  # r1 folded into one insert; r2 (reopened) and r0 (older) stay updates
        ("run", [("r2", "w", "running", 1.0, "in", "{}", None, None)]), ("call", [("r1",)]),
        ("run_done", [("r1", "w", "ok", 1.0, "in", "{}", "k1", None, 2.0, "out")]),
        ("finish", [("ok", 2.0, "a", "r2")]), ("reopen", [("r2",)]), ("finish", [("ok", 3.0, "b", "r2"), ("error", 4.0, None, "r0")])]
    store = open_store()
    a = store.start_run("w", "in a")
    store.finish_run(a, status="error", output="out a")
    b = store.start_run("w", "in b")
    store.finish_run(b, status="ok", output="first")
    store.reopen_run(b)  # resumed in the same batch: its updates are applied in order, not folded
    store.finish_run(b, status="ok", output="second")
    c = store.start_run("w", "in c")
    store.flush()
    store.finish_run(c, output="out c")  # finished in a later batch: an update, as before
    runs = {r.run_id: r for r in store.runs(limit=None)}
    assert (runs[a].status, runs[a].output, runs[a].input) == ("error", "out a", "in a") and runs[a].latency_s >= 0
    assert (runs[b].status, runs[b].output) == ("ok", "second")
    assert (runs[c].status, runs[c].output) == ("ok", "out c")
