"""Feedback -> misroute export -> fit: the loop that fixes misroutes from the logs, through the CLI."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from turnout.cli import app
from turnout.store import SQLiteStore

runner = CliRunner()

SPEC = {
    "name": "support",
    "router": "semantic",
    "fallback": "general",
    "embedder": "fake",
    "semantic": {"default_threshold": 0.99},  # deliberately mis-set: everything falls back
    "routes": {
        "billing": {"utterances": ["charged twice on my invoice", "card payment failed"]},
        "technical": {"utterances": ["the app crashes on startup", "error when uploading"]},
        "general": {"utterances": ["hello there", "opening hours"]},
    },
}
TRAFFIC = [("charged twice invoice", "billing"), ("card payment failed again", "billing"), ("app crashes startup", "technical"),
           ("error uploading file", "technical"), ("hello there friend", "general"), ("opening hours please", "general")]


def test_feedback_misroutes_fit_round_trip(tmp_path):
    spec, db = tmp_path / "router.yaml", tmp_path / "traces.db"
    spec.write_text(yaml.safe_dump(SPEC))
    runs = []
    for text, correct in TRAFFIC:
        r = runner.invoke(app, ["route", str(spec), text, "--db", str(db), "--json"])
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        assert d["route"] == "general" and d["run_id"]
        runs.append((d["run_id"], correct))
    for run_id, correct in runs:
        r = runner.invoke(app, ["feedback", run_id, "--label", f"route={correct}", "--score", "0", "--db", str(db)])
        assert r.exit_code == 0, r.output

    r = runner.invoke(app, ["route", "misroutes", "--db", str(db), "--json"])
    doc = json.loads(r.output)
    assert doc["misroutes"] == 4  # the two "general" rows were right
    assert {(p["routed"], p["correct"]) for p in doc["pairs"]} == {("general", "billing"), ("general", "technical")}

    data = tmp_path / "labelled.jsonl"
    r = runner.invoke(app, ["route", "misroutes", "--db", str(db), "--all", "-o", str(data)])
    assert r.exit_code == 0 and len(data.read_text().splitlines()) == 6

    fitted = tmp_path / "fitted.yaml"
    assert runner.invoke(app, ["route", "fit", str(spec), str(data), "-o", str(fitted)]).exit_code == 0
    before = json.loads(runner.invoke(app, ["route", "eval", str(spec), str(data), "--json"]).output)["accuracy"]
    after = json.loads(runner.invoke(app, ["route", "eval", str(fitted), str(data), "--json"]).output)["accuracy"]
    assert before == pytest.approx(2 / 6, abs=1e-3) and after == 1.0

    with SQLiteStore(db) as store:
        assert len(store.feedback()) == 6 and store.feedback(runs[0][0])[0]["score"] == 0


def test_feedback_errors(tmp_path):
    db = tmp_path / "t.db"
    r = runner.invoke(app, ["feedback", "nope", "--score", "1", "--db", str(db)])
    assert r.exit_code == 2 and "no such trace store" in r.output and not db.exists()
    SQLiteStore(db).close()
    r = runner.invoke(app, ["feedback", "nope", "--score", "1", "--db", str(db)])
    assert r.exit_code == 2 and "no run 'nope'" in r.output
    r = runner.invoke(app, ["feedback", "x", "--db", str(db)])
    assert r.exit_code == 2 and "at least one of" in r.output
    r = runner.invoke(app, ["feedback", "x", "--label", "route", "--db", str(db)])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
