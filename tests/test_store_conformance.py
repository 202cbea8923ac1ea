"""One conformance suite for every trace-store backend: SQLite always, PostgreSQL when a server is
given (``TURNOUT_TEST_PG_URL``; `.ci/run` installs and starts one with scripts/start-postgres.sh)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from turnout import ConfigError, Price, Request
from turnout.policies import Traced
from turnout.routing import Route, RuleRouter
from turnout.store import MIGRATIONS, SQLiteStore
from turnout.testing import ScriptedModel

PG_URL = os.environ.get("TURNOUT_TEST_PG_URL")  # read at import: the autouse fixture clears TURNOUT_*


def _reset_pg() -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as c:
        c.execute("DROP SCHEMA public CASCADE")
        c.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path):
    if request.param == "postgres":
        if not PG_URL:
            pytest.skip("no PostgreSQL server (set TURNOUT_TEST_PG_URL; .ci/run starts one)")
        from turnout.store.postgres import PostgresStore

        _reset_pg()
        target = PG_URL
        factory = PostgresStore
    else:
        target = str(tmp_path / "c.db")
        factory = SQLiteStore
    opened = []

    def make(**kw):
        s = factory(target, flush_interval=0.05, **kw)
        opened.append(s)
        return s

    make.target = target  # type: ignore[attr-defined]
    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for s in opened:
        try:
            s.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


def test_each_backend_implements_every_narrow_protocol(open_store):
    """The store's tables by concern: traces, the batch ledger, API keys, feedback, reads — each a
    protocol its callers are typed by; both backends implement all of them."""
    from turnout.store.base import BatchLedger, EscalationQueue, FeedbackStore, KeyTable, RunReader, TraceStore

    s = open_store()
    for proto in (TraceStore, BatchLedger, KeyTable, FeedbackStore, EscalationQueue, RunReader):
        assert isinstance(s, proto), proto.__name__


def test_migrations(open_store):
    s = open_store()
    assert s.schema_version == MIGRATIONS[-1][0]
    s.close()
    assert open_store().schema_version == MIGRATIONS[-1][0]


async def test_steps_sections_and_verdicts_inside_a_run(open_store):
    from turnout.parallel import extract_number, run_sections, sampler, split_items, vote

    s = open_store()
    m = Traced(ScriptedModel(default="it is 7", name="m"))  # no sink: the active run's store gets the calls
    with s.run("wf") as run_id:
        await run_sections(split_items(["a", "b", "c"]), m, "do {section}", name="map")
        await vote(sampler(m, Request.of("q")), n=4, extract=extract_number, name="v")
        s.record_step("map", "section", latency_s=0.5, cost_usd=0.01, detail={"sections": 3})
    assert [(r["idx"], r["title"], r["status"]) for r in s.sections(run_id=run_id)] == [(0, "Item 1", "ok"), (1, "Item 2", "ok"),
                                                                                         (2, "Item 3", "ok")]
    (step,) = s.steps(run_id=run_id)
    assert (step["name"], step["kind"], step["detail"]) == ("map", "section", {"sections": 3})
    (v,) = s.verdicts(name="v")
    assert v["answer"] == "7" and v["run_id"] == run_id
    assert len(s.calls(run_id=run_id)) == 3 + v["samples_used"]


def test_unreachable_at_open_keeps_the_run_going(open_store, tmp_path, caplog):
    if open_store.kind == "postgres":
        from turnout.store.postgres import PostgresStore

        target, factory = "postgresql://u:hunter2@127.0.0.1:9/db", PostgresStore  # nothing listens on port 9
    else:
        (tmp_path / "blocker").write_text("x")
        target, factory = str(tmp_path / "blocker" / "t.db"), SQLiteStore
    with pytest.raises(ConfigError, match="cannot open the trace store"):
        factory(target, strict=True)
    with caplog.at_level("WARNING", logger="turnout.store.sqlite"):
        s = factory(target, reconnect_interval=0.05)
    assert not s.connected and "cannot open the trace store" in caplog.text and "hunter2" not in caplog.text
    with s.run("wf", "text"):
        s.record(_event())
    from turnout.store import StoreError

    with pytest.raises(StoreError, match="cannot be reached"):
        s.runs()
    assert len(s._q) == 3  # run, call, finish: queued, not lost
    s.close()


def test_reachable_again_writes_what_was_queued(tmp_path):
    (tmp_path / "later").write_text("not yet a directory")
    s = SQLiteStore(tmp_path / "later" / "t.db", flush_interval=0.02, reconnect_interval=0.02)
    with s.run("wf"):
        s.record(_event())
    (tmp_path / "later").unlink()
    (tmp_path / "later").mkdir()
    assert s.calls()[0].model == "m" and s.runs()[0].workflow == "wf" and s.connected
    s.close()


def _event():
    from turnout.policies.trace import CallEvent

    return CallEvent("m", 0.0, 0.01, True)


async def test_calls_runs_and_decisions(open_store):
    s = open_store()
    m = Traced(ScriptedModel(default="answer", name="m"), s)
    r = RuleRouter([Route("billing", keywords=("invoice",)), Route("general")], fallback="general", name="rules")
    with s.run("wf", "hello", tags={"team": "a"}) as run_id:
        await m.complete(Request.of("q"))
        s.record_decision(await r.decide("my invoice"), router="support", input="my invoice")
    assert [c.model for c in s.calls(run_id=run_id)] == ["m"]
    d = s.decisions(run_id=run_id)[0]
    assert (d.route, d.outcome, d.scores) == ("billing", "matched", {"billing": 1.0})
    run = s.runs()[0]
    assert (run.run_id, run.status, run.tags, run.input) == (run_id, "ok", {"team": "a"}, "hello")


def test_redaction(open_store):
    s = open_store(redact=True)
    with s.run("wf", "card 4111 1111 1111 1111"):
        pass
    assert s.runs()[0].input.startswith("sha256:")


async def test_concurrent_tasks_lose_no_rows(open_store):
    s = open_store()
    m = Traced(ScriptedModel(default="ok"), s)
    await asyncio.gather(*(m.complete(Request.of(str(i))) for i in range(300)))
    assert len(s.calls()) == 300


def test_two_processes(open_store):
    kind, target = open_store.kind, open_store.target
    open_store().close()  # create the schema first
    cls = "SQLiteStore" if kind == "sqlite" else "PostgresStore"
    mod = "turnout.store" if kind == "sqlite" else "turnout.store.postgres"
    code = (f"import sys; from {mod} import {cls}\n"
            "from turnout.policies.trace import CallEvent\n"
            f"s = {cls}(sys.argv[1], flush_interval=0.01)\n"
            "for i in range(200): s.record(CallEvent(sys.argv[2], 0.0, 0.01, True))\n"
            "s.close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, target, f"p{k}"]) for k in range(2)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    s = open_store()
    assert len(s.calls(model="p0")) == 200 and len(s.calls(model="p1")) == 200


def test_feedback_misroutes_and_experiments(open_store):
    from turnout.routing import Decision

    s = open_store()
    with s.run("wf") as run_id:
        s.record_decision(Decision("general", 0.4, {}, "semantic", "", 0.0, "matched", "general"), router="r", input="refund me")
    s.add_feedback(run_id, score=0, labels={"route": "refund"}, comment="wrong")
    mis = s.misroutes()
    assert [(d.route, want) for d, want in mis] == [("general", "refund")]
    with pytest.raises(ConfigError):
        s.add_feedback("no-such-run", score=1)
    s.record_outcome("exp", "control", unit="u1", cost_usd=0.1, correct=True)
    assert s.outcomes("exp")[0]["variant"] == "control"


def test_postgres_password_is_never_shown():
    from turnout.store.postgres import scrub_url

    assert scrub_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    if PG_URL:
        bad = PG_URL.replace("turnout_test", "no_such_db")
        from turnout.store.postgres import PostgresStore

        with pytest.raises(ConfigError) as ei:
            PostgresStore(bad, strict=True)
        assert "turnout-test" not in str(ei.value)


def test_the_escalation_queue_and_waiting_runs_behave_alike_on_every_backend(open_store):
    from turnout.errors import QueueError

    s = open_store()
    rid = s.start_run("triage", "late order", tags={"team": "support"})
    iid = s.queue_suspend({"queue": "support", "run_id": rid, "step": "escalate", "kind": "route", "input": "late order",
                           "context": {"scores": {"billing": 0.4}}, "choices": ["billing", "tech"], "team": "support"},
                          {"workflow": "triage", "path": "/wf.yaml", "version": "abc", "journal": {"nodes": {"/1": ["call", "pre", "ok", "x", 0, 0]}}})
    other = open_store()  # a second process's view: written at once, not queued
    assert [i["item_id"] for i in other.queue_items(queue="support", status="open")] == [iid]
    assert other.queue_items(team="other", any_team=False) == [] and len(other.queue_items(team="support", any_team=False)) == 1
    assert other.runs()[0].status == "waiting" and other.suspended(rid)["journal"]["nodes"]["/1"][3] == "x"
    s.queue_claim(iid, "ana")
    with pytest.raises(QueueError, match="claimed by ana"):
        other.queue_resolve(iid, "bob", {"route": "billing"})
    with pytest.raises(QueueError, match="not a route"):
        s.queue_resolve(iid, "ana", {"route": "nope"})
    done = s.queue_resolve(iid, "ana", {"route": "tech", "note": "bug"})
    assert done["status"] == "resolved" and done["resolution"] == {"route": "tech", "note": "bug"}
    with pytest.raises(QueueError, match="already resolved"):
        other.queue_resolve(iid, "bob", {"route": "billing"})
    assert [s.resume_take(rid), other.resume_take(rid)] == [True, False]
    s.resume_done(rid, iid)
    assert other.suspended(rid) is None
    s.record_fit("triage", source="queue", examples=3, detail={"accuracy": 0.9})
    assert [(f["router"], f["examples"]) for f in other.fits()] == [("triage", 3)]


async def test_runs_by_key_team_and_route_and_a_keys_spend(open_store):
    """The dashboard's and `turnout logs`' filters and a key's spend, on their indexes, alike on both
    backends; a store from before the key and team columns is backfilled from the runs' tags."""
    s = open_store()
    m = Traced(ScriptedModel(default="answer", name="m", price=Price(1.0, 1.0)), s)
    r = RuleRouter([Route("billing", keywords=("invoice",)), Route("general")], fallback="general", name="triage")
    ids = {}
    for i, (key, team, text) in enumerate([("k1", "search", "my invoice"), ("k1", "search", "hello"), ("k2", "ads", "an invoice"),
                                           ("k2", None, "bye")]):
        tags = {"key": key, **({"team": team} if team else {})}
        with s.run("gateway", text, tags=tags) as run_id:
            await m.complete(Request.of(text))
            await r.decide(text)
        ids[i] = run_id
    assert [x.run_id for x in s.search_runs(key="k1")] == [ids[1], ids[0]]
    assert [x.run_id for x in s.search_runs(team="search", q="invoice")] == [ids[0]]
    assert [x.run_id for x in s.search_runs(route="billing", router="triage")] == [ids[2], ids[0]]
    assert [x.run_id for x in s.search_runs(route="billing", key="k2")] == [ids[2]]
    assert s.search_runs(route="billing", router="another") == []
    each = s.spend()
    assert each > 0 and s.spend(key="k1") + s.spend(key="k2") == pytest.approx(each) and s.spend(team="ads") == pytest.approx(s.calls(run_id=ids[2])[0].cost_usd)
    # an older store: the columns empty, the tags there — migration 15's backfill fills them
    from turnout.store._migrations import RUN_KEYS_FROM_TAGS

    s._now("UPDATE runs SET key_id = NULL, team = NULL", ())
    assert s.search_runs(key="k2") == []
    s._now(s.dialect.ddl(RUN_KEYS_FROM_TAGS), ())
    assert [x.run_id for x in s.search_runs(key="k2")] == [ids[3], ids[2]] and [x.run_id for x in s.search_runs(team="ads")] == [ids[2]]
