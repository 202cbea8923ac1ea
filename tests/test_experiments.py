"""A/B experiments: deterministic assignment, a known better variant reaching significance."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from typer.testing import CliRunner

from turnout import ConfigError
from turnout.cli import app
from turnout.store import SQLiteStore
from turnout.store.experiments import Experiment, experiment_report, wilson

runner = CliRunner()


def test_assignment_is_deterministic_and_follows_the_split():
    e = Experiment("router-v2", {"control": 0.8, "candidate": 0.2})
    assert all(e.assign(f"user{i}") == e.assign(f"user{i}") for i in range(100))
    counts = Counter(e.assign(f"user{i}") for i in range(5000))
    assert 0.77 < counts["control"] / 5000 < 0.83
    assert Experiment("other", {"control": 0.8, "candidate": 0.2}).assign("user1") in ("control", "candidate")
    with pytest.raises(ConfigError):
        Experiment("x", {"only": 1.0})


def test_wilson_interval():
    lo, hi = wilson(80, 100)
    assert lo < 0.8 < hi and 0.70 < lo < 0.72 and 0.86 < hi < 0.88


def fill(store, n, acc_control, acc_candidate, seed=3):
    rng = random.Random(seed)
    e = Experiment("router-v2", {"control": 0.5, "candidate": 0.5})
    for i in range(n):
        v = e.assign(f"u{i}")
        p = acc_candidate if v == "candidate" else acc_control
        store.record_outcome("router-v2", v, unit=f"u{i}", cost_usd=0.001 if v == "candidate" else 0.002,
                             latency_s=rng.uniform(0.1, 0.3), error=rng.random() < 0.02, correct=rng.random() < p)


def test_a_better_variant_reaches_a_significant_verdict(tmp_path):
    db = tmp_path / "e.db"
    with SQLiteStore(db) as store:
        fill(store, 2000, 0.70, 0.85)
    r = runner.invoke(app, ["experiment", "report", "router-v2", "--db", str(db), "--json"])
    rep = json.loads(r.output)
    assert rep["verdict"].startswith("candidate is better on accuracy")
    assert rep["comparisons"]["candidate"]["accuracy_p"] < 0.001 and rep["comparisons"]["candidate"]["cost_p"] < 0.001
    lo, hi = rep["variants"]["candidate"]["accuracy_ci"]
    assert lo < 0.85 < hi
    r = runner.invoke(app, ["experiment", "report", "router-v2", "--db", str(db)])
    assert r.exit_code == 0 and "verdict" in r.output and "candidate" in r.output


def test_no_real_difference_is_not_yet_significant(tmp_path):
    with SQLiteStore(tmp_path / "e.db") as store:
        fill(store, 200, 0.8, 0.8, seed=11)
        rep = experiment_report(store.outcomes("router-v2"))
    assert "not yet significant" in rep["verdict"]


def test_unknown_experiment_is_a_clear_error(tmp_path):
    SQLiteStore(tmp_path / "e.db").close()
    r = runner.invoke(app, ["experiment", "report", "nope", "--db", str(tmp_path / "e.db")])
    assert r.exit_code == 2 and "no outcomes recorded for experiment 'nope'" in r.output
