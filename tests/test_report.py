"""`turnout report` over a real trace store."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from turnout import ConfigError, Price, Request
from turnout.cli import app
from turnout.errors import ProviderUnavailable
from turnout.policies import Fallback, Traced
from turnout.reports.tables import parse_since
from turnout.routing import Route, RuleRouter
from turnout.store import SQLiteStore
from turnout.testing import ScriptedModel

runner = CliRunner()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "t.db"

    async def fill():
        with SQLiteStore(path) as store:
            a = ScriptedModel(queue=[ProviderUnavailable("down")], default="ok", name="primary", price=Price(1000, 1000))
            b = ScriptedModel(default="ok", name="backup", price=Price(1000, 1000))
            m = Traced(Fallback([a, b]), store)
            for i in range(4):
                await m.complete(Request.of(f"q{i}"))
            r = RuleRouter([Route("billing", keywords=("invoice",)), Route("general")], fallback="general", name="rules")
            for text in ("invoice", "invoice again", "hello"):
                store.record_decision(await r.decide(text), router="support", input=text)

    asyncio.run(fill())
    return path


def test_report_by_model(db):
    r = runner.invoke(app, ["report", "--db", str(db), "--json"])
    rows = json.loads(r.output)
    # primary failed once and then cooled down, so the backup answered all four calls
    assert rows[0]["model"] == "primary" and rows[0]["calls"] == 4 and rows[0]["fallback_rate"] == 1.0 and rows[0]["error_rate"] == 0
    assert rows[0]["cost_usd"] > 0 and rows[0]["latency_p95_ms"] >= rows[0]["latency_p50_ms"]
    r = runner.invoke(app, ["report", "--db", str(db)])
    assert r.exit_code == 0 and "primary" in r.output and "100.0%" in r.output


def test_report_by_route(db):
    rows = json.loads(runner.invoke(app, ["report", "--by", "route", "--db", str(db), "--json"]).output)
    assert [(x["route"], x["decisions"]) for x in rows] == [("billing", 2), ("general", 1)]
    assert rows[1]["outcomes"] == {"fallback": 1} and rows[1]["low_confidence"] == 1


def test_since_and_bad_options(db):
    assert json.loads(runner.invoke(app, ["report", "--db", str(db), "--since", "1h", "--json"]).output)[0]["calls"] == 4
    assert parse_since("2d", now=1_000_000) == 1_000_000 - 2 * 86400
    with pytest.raises(ConfigError):
        parse_since("yesterday")
    r = runner.invoke(app, ["report", "--by", "color", "--db", str(db)])
    assert r.exit_code == 2 and "--by must be" in r.output


def test_report_by_vote(tmp_path):
    from turnout.parallel import extract_number, sampler, vote

    db = tmp_path / "v.db"

    async def run():
        with SQLiteStore(db) as store:
            for reply in ("42", "7"):
                v = await vote(sampler(ScriptedModel(default=reply), Request.of("q")), 8, extract=extract_number, wave=1)
                store.record_verdict(v, name="arith")

    asyncio.run(run())
    rows = json.loads(runner.invoke(app, ["report", "--by", "vote", "--db", str(db), "--json"]).output)
    assert rows == [{"name": "arith", "verdicts": 2, "mean_agreement": 1.0, "low_agreement": 0, "samples_used": 10,
                     "samples_planned": 16, "samples_saved": 6, "outcomes": {"decided": 2}}]


def test_vote_prior_is_fitted_from_the_store_and_printed_for_the_workflow(tmp_path):
    import random

    from turnout.parallel import Vote, tally

    db = tmp_path / "p.db"
    rng = random.Random(4)
    with SQLiteStore(db) as store:
        for _ in range(40):  # a model that agrees with itself about 95% of the time
            p = rng.betavariate(20, 1)
            keys = ["a" if rng.random() < p else rng.choice("bc") for _ in range(8)]
            store.record_verdict(tally([Vote(k, k, "", 1.0, i) for i, k in enumerate(keys)]), name="arith")
    doc = json.loads(runner.invoke(app, ["vote", "prior", "--name", "arith", "--db", str(db), "--json"]).output)
    assert doc["fitted_on"] == 40 and doc["mean_share"] > 0.85
    assert doc["stops_uniform"] == {"unanimous": 3, "one_dissent": 5} and doc["stops_fitted"]["unanimous"] == 2
    out = runner.invoke(app, ["vote", "prior", "--name", "arith", "--db", str(db)]).output
    assert "fitted on 40 logged votes" in out and f"prior: {{alpha: {doc['alpha']:g}, beta: {doc['beta']:g}}}" in out
    r = runner.invoke(app, ["vote", "prior", "--name", "nothing", "--db", str(db)])
    assert r.exit_code != 0 and "at least 10 recorded votes" in r.output


@pytest.fixture
def runs_db(tmp_path):
    path = tmp_path / "w.db"

    async def fill():
        with SQLiteStore(path) as store:
            m = Traced(ScriptedModel(default="ok", name="<b>m</b>", price=Price(1000, 1000)))
            r = RuleRouter([Route("billing", keywords=("invoice",)), Route("general")], fallback="general", name="rules")
            for i in range(3):
                with store.run("triage", f"invoice {i}"):
                    await r.decide(f"invoice {i}")
                    await m.complete(Request.of("q"))
            with pytest.raises(RuntimeError), store.run("summary", "doc"):
                await m.complete(Request.of("q"))
                raise RuntimeError("boom")

    asyncio.run(fill())
    return path


def test_report_by_workflow(runs_db):
    rows = json.loads(runner.invoke(app, ["report", "--by", "workflow", "--db", str(runs_db), "--json"]).output)
    assert [(x["workflow"], x["runs"], x["status"]) for x in rows] == [("triage", 3, {"ok": 3}), ("summary", 1, {"error": 1})]
    assert rows[1]["error_rate"] == 1.0 and rows[0]["cost_usd"] == pytest.approx(3 * rows[1]["cost_usd"])
    out = runner.invoke(app, ["report", "--by", "workflow", "--db", str(runs_db)]).output
    assert "triage" in out and "ok 3" in out


def test_report_html_is_one_self_contained_page(runs_db, tmp_path):
    page = tmp_path / "out" / "report.html"
    r = runner.invoke(app, ["report", "--db", str(runs_db), "--html", str(page)])
    assert r.exit_code == 2 and "cannot write the HTML report" in r.output  # the folder does not exist: said, not a traceback
    page = tmp_path / "report.html"
    r = runner.invoke(app, ["report", "--db", str(runs_db), "--html", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert text.startswith("<!doctype html>") and text.count("<svg") >= 6
    assert "<script" not in text and "http://" not in text and "https://" not in text  # nothing to fetch
    assert "&lt;b&gt;m&lt;/b&gt;" in text and "<b>m</b>" not in text  # names are escaped
    assert "billing" in text and "triage" in text and "summary" in text
    assert ">4</b>runs" in text.replace("\n", "") or "<b>4</b>runs" in text  # the runs tile


def test_report_on_an_unreachable_store_is_one_clear_line(tmp_path):
    (tmp_path / "f").write_text("x")
    r = runner.invoke(app, ["report", "--db", str(tmp_path / "f" / "t.db")])
    assert r.exit_code == 2 and "no such trace store" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["report", "--db", str(tmp_path)])  # there, but a folder: it cannot be opened
    assert r.exit_code == 2 and "cannot open the trace store" in r.output and "Traceback" not in r.output
