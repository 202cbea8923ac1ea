"""The SQLite trace store: migrations, what is recorded, redaction, concurrency, failure handling."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys

import pytest

from turnout import ConfigError, Request
from turnout.errors import ProviderUnavailable
from turnout.policies import Traced
from turnout.routing import Route, RuleRouter
from turnout.store import MIGRATIONS, SQLiteStore, StoreError
from turnout.testing import ScriptedModel


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "t.db", flush_interval=0.05)
    yield s
    s.close()


def test_migrations_apply_once_and_reopen_cleanly(tmp_path):
    p = tmp_path / "t.db"
    with SQLiteStore(p) as s:
        assert s.schema_version == MIGRATIONS[-1][0]
    with SQLiteStore(p) as s:
        assert s.schema_version == MIGRATIONS[-1][0]
    rows = sqlite3.connect(p).execute("SELECT version FROM schema_migrations").fetchall()
    assert rows == [(v,) for v, _ in MIGRATIONS] == [(v,) for v in range(1, len(MIGRATIONS) + 1)]


async def test_calls_are_recorded_and_attributed_to_the_run(store):
    m = Traced(ScriptedModel(queue=["ok", ProviderUnavailable("down")], default="ok", name="s"), store)
    with store.run("triage", "hello") as run_id:
        await m.complete(Request.of("q1"))
        with pytest.raises(ProviderUnavailable):
            await m.complete(Request.of("q2"))
    await m.complete(Request.of("outside"))  # not in a run
    calls = store.calls(run_id=run_id)
    assert [(c.model, c.ok, c.error_type) for c in calls] == [("s", True, None), ("s", False, "ProviderUnavailable")]
    assert calls[0].output_tokens > 0 and len(store.calls(model="s")) == 3
    run = store.runs()[0]
    assert run.run_id == run_id and run.workflow == "triage" and run.status == "ok" and run.input == "hello"
    assert run.output_tokens == calls[0].output_tokens


async def test_decisions_are_recorded(store):
    r = RuleRouter([Route("billing", keywords=("invoice",)), Route("general")], fallback="general", name="rules")
    with store.run("route") as run_id:
        for text in ("my invoice", "hello"):
            store.record_decision(r.decide_sync(text), router="support", input=text)
    ds = store.decisions(run_id=run_id)
    assert [(d.route, d.outcome, d.input) for d in ds] == [("billing", "matched", "my invoice"), ("general", "fallback", "hello")]
    assert ds[0].scores == {"billing": 1.0} and ds[0].router == "support"


async def test_everything_inside_a_run_records_itself(store):
    """No wiring: decisions (once per cascade, not per stage), calls and verdicts land in the active run."""
    from turnout.parallel import extract_number, run_sections, sampler, split_items, vote
    from turnout.routing import CascadeRouter, Stage
    from turnout.testing import FunctionModel

    rules = RuleRouter([Route("billing", keywords=("invoice",)), Route("general")], name="rules")
    sem = RuleRouter([Route("billing", keywords=("money",)), Route("general", keywords=("hello",))], name="second")
    cascade = CascadeRouter([Stage(rules), Stage(sem)], name="triage")
    model = Traced(ScriptedModel(default="The answer is 42."))  # no sink of its own
    await rules.decide("an invoice")  # outside any run: not recorded
    with store.run("wf") as run_id:
        assert [d.route for d in await cascade.decide_many(["my invoice", "hello"])] == ["billing", "general"]
        await rules.decide("invoice again")
        v = await vote(sampler(model, Request.of("q")), n=3, extract=extract_number, name="answer")
        failing = FunctionModel(lambda r: (_ for _ in ()).throw(ProviderUnavailable("down")) if "B" in r.messages[-1].content else "ok")
        res = await run_sections(split_items(["A", "B"]), Traced(failing), "say {section}", name="parts")
    ds = store.decisions(run_id=run_id)
    assert [(d.router, d.route, d.input) for d in ds] == [
        ("triage", "billing", "my invoice"), ("triage", "general", "hello"), ("rules", "billing", "invoice again")]
    assert len(store.decisions()) == 3
    assert len(store.calls(run_id=run_id)) == v.samples_used + 2
    assert [(r["step"], r["idx"], r["status"]) for r in store.sections(run_id=run_id)] == [("parts", 0, "ok"), ("parts", 1, "error")]
    assert "down" in store.sections(step="parts")[1]["error"] and res.failed[0][0] == 1
    (verdict,) = store.verdicts(name="answer")
    assert verdict["run_id"] == run_id and verdict["answer"] == "42"


def test_redaction_stores_hashes(tmp_path):
    with SQLiteStore(tmp_path / "r.db", redact=True) as s:
        with s.run("wf", "my card is 4111 1111 1111 1111"):
            pass
        row = s.runs()[0]
    assert row.input.startswith("sha256:") and "4111" not in row.input
    assert b"4111" not in (tmp_path / "r.db").read_bytes()


async def test_many_tasks_lose_no_rows(store):
    m = Traced(ScriptedModel(default="ok"), store)
    await asyncio.gather(*(m.complete(Request.of(str(i))) for i in range(500)))
    assert len(store.calls()) == 500


def test_two_processes_share_one_file(tmp_path):
    p = tmp_path / "shared.db"
    code = (
        "import sys; from turnout.store import SQLiteStore\n"
        "from turnout.policies.trace import CallEvent\n"
        "s = SQLiteStore(sys.argv[1], flush_interval=0.01)\n"
        "for i in range(300): s.record(CallEvent(sys.argv[2], 0.0, 0.01, True))\n"
        "s.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p), f"proc{k}"]) for k in range(2)]
    assert all(pr.wait(timeout=60) == 0 for pr in procs)
    with SQLiteStore(p) as s:
        assert len(s.calls(model="proc0")) == 300 and len(s.calls(model="proc1")) == 300


async def test_a_locked_database_does_not_fail_the_run(tmp_path, caplog):
    s = SQLiteStore(tmp_path / "l.db", flush_interval=3600)
    blocker = sqlite3.connect(tmp_path / "l.db", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    s._db.execute("PRAGMA busy_timeout=50")
    m = Traced(ScriptedModel(default="ok"), s)
    with caplog.at_level(logging.WARNING):
        assert (await m.complete(Request.of("q"))).text == "ok"  # the call itself succeeds
        s.flush()
        s.flush()
    assert sum("cannot write" in r.message for r in caplog.records) == 1  # reported once
    blocker.rollback()
    blocker.close()
    assert len(s.calls()) == 1  # the kept row is written once the lock is gone
    s.close()


def test_strict_store_raises_and_bad_paths_are_clear(tmp_path):
    s = SQLiteStore(tmp_path / "s.db", strict=True, flush_interval=3600)
    blocker = sqlite3.connect(tmp_path / "s.db", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    s._db.execute("PRAGMA busy_timeout=50")
    s.start_run("wf")
    with pytest.raises(StoreError, match="trace store write failed"):
        s.flush()
    blocker.rollback()
    blocker.close()
    s.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot open the trace store"):
        SQLiteStore(tmp_path / "file" / "sub.db", strict=True)



def test_the_busy_timeout_comes_from_the_environment(tmp_path, monkeypatch):
    from turnout import ConfigError

    monkeypatch.setenv("TURNOUT_DB_BUSY_TIMEOUT", "0.5")
    s = SQLiteStore(tmp_path / "t.db")
    assert s.busy_timeout == 0.5 and s._reading().execute("PRAGMA busy_timeout").fetchone()[0] == 500
    s.close()
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv("TURNOUT_DB_BUSY_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="TURNOUT_DB_BUSY_TIMEOUT"):
            SQLiteStore(tmp_path / "u.db")
