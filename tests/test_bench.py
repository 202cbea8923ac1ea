"""The overhead benchmark keeps running (its numbers are recorded in docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "overhead.py"


def test_overhead_benchmark_runs_and_reports_both_clients():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", "200", "--cap", "32", "--latency", "0.01", "--reps", "1", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    doc = json.loads(out.stdout)
    for kind in ("aiohttp", "turnout", "adapter-only", "sectioning", "sqlite-trace"):
        assert doc[kind]["cpu_us_per_call_median"] > 0 and doc[kind]["wall_s_median"] > 0
    assert doc["ratio_cpu"] > 0 and doc["ratio_cpu_sectioning"] > 0 and doc["ideal_wall_s"] > 0


def test_overhead_sweep_reports_wall_time_against_the_ideal_per_latency():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", "64", "--cap", "16", "--sweep", "0.01,0.05", "--reps", "1", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    rows = json.loads(out.stdout)["rows"]
    assert [r["latency_s"] for r in rows] == [0.01, 0.05]
    for r in rows:  # 4 waves of the mock's latency: neither client can beat the ideal
        assert r["ideal_s"] == 4 * r["latency_s"] and r["aiohttp_vs_ideal"] >= 1.0 and r["turnout_vs_ideal"] >= 1.0


def test_gateway_benchmark_runs_and_reports_both_paths():
    out = subprocess.run(
        [sys.executable, str(BENCH.parent / "gateway.py"), "--rate", "50", "--seconds", "1", "--n", "100", "--cap", "8", "--reps", "1",
         "--auth", "--json"],
        capture_output=True, text=True, timeout=180, check=True,
    )
    doc = json.loads(out.stdout)
    for k in ("direct", "gateway"):
        assert doc["open_loop"][k]["p50_ms"] > 0 and doc["open_loop"][k]["errors"] == 0
    assert doc["closed_loop"]["gateway_rps"] > 0 and "added_p50_ms" in doc
    cpu = doc["cpu_us_per_request"]  # read from /proc per process: every server did some work per request
    assert set(cpu) == {"direct", "minimal-proxy", "gateway", "gateway-no-log"} and cpu["gateway"] > 0


def test_voting_benchmark_replays_recorded_embedded_model_votes():
    """The 0.5B model's recorded votes (bench/data): the predictive rule casts at most half the samples
    of fixed N = 8 within a point of its accuracy, and replaying the rules reproduces the live calls."""
    data = BENCH.parent / "data" / "votes-local-t04.jsonl"
    out = subprocess.run([sys.executable, str(BENCH.parent / "voting.py"), "--replay", str(data), "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(out.stdout)
    assert doc["problems"] == 100 and doc["fixed"]["samples"] == 8
    pred = doc["replayed"]["predictive 0.95"]
    assert pred["samples_vs_fixed"] <= 0.5 and pred["points_vs_fixed"] >= -1.0 and pred["meets_target"]
    for label, live in doc["live"].items():  # the pure rule on the recorded votes = what the live run spent
        assert live["samples"] == doc["replayed"][label]["samples"] and live["accuracy"] == doc["replayed"][label]["accuracy"]
    assert doc["replayed"]["decided (exact)"]["accuracy"] == doc["fixed"]["accuracy"]  # exact: never changes the winner
    assert doc["replayed"]["decided (exact)"]["samples"] > 5  # ...and cannot stop before 5 of 8


def test_voting_benchmark_replays_the_recorded_grade_school_run_on_the_1_5b_model():
    """Issue 19's run (bench/data/votes-local-strong-grade.jsonl, 40 grade-school problems, N = 8):
    eight votes beat one sample, and the predictive rule with the prior fitted on other problems
    casts at most 0.6x the samples of fixed N within a point of its accuracy."""
    data = BENCH.parent / "data" / "votes-local-strong-grade.jsonl"
    out = subprocess.run([sys.executable, str(BENCH.parent / "voting.py"), "--replay", str(data), "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(out.stdout)
    assert doc["problems"] == 40 and doc["model"] == "local-strong" and doc["target_samples_vs_fixed"] == 0.6
    assert doc["fixed_beats_single"] and doc["fixed"]["accuracy"] > doc["single"]["accuracy"]
    pred = doc["replayed"]["predictive 0.95, fitted prior"]
    assert pred["samples_vs_fixed"] <= 0.6 and pred["points_vs_fixed"] >= -1.0 and pred["meets_target"]
    assert doc["replayed"]["decided (exact)"]["accuracy"] == doc["fixed"]["accuracy"]


def test_store_benchmark_runs_and_reports_the_ratio():
    out = subprocess.run([sys.executable, str(BENCH.parent / "store.py"), "--small", "50", "--large", "500", "--lookups", "5", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(out.stdout)
    assert doc["runs_large"] == 500 and doc["run_detail_ms_small"] > 0 and doc["ratio"] > 0


def test_cache_benchmark_reports_hits_against_a_miss_in_the_same_run():
    out = subprocess.run([sys.executable, str(BENCH.parent / "cache.py"), "--n", "200", "--misses", "10", "--latency", "0.01", "--json"],
                         capture_output=True, text=True, timeout=180, check=True)
    doc = json.loads(out.stdout)
    for k in ("memory", "sqlite"):  # a hit never reaches the mock: far below one call at its latency
        assert 0 < doc[k]["hit"]["median_ms"] < doc[k]["miss"]["median_ms"] and doc[k]["hit_vs_miss"] < 1
    assert doc["semantic"]["encoder"]["median_ms"] > 0 and doc["semantic"]["hit"]["median_ms"] > 0


def test_dashboard_benchmark_reports_every_page_and_the_write_rate():
    out = subprocess.run([sys.executable, str(BENCH.parent / "dashboard.py"), "--small", "100", "--large", "600", "--reps", "2",
                          "--writes", "300", "--json"], capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(out.stdout)
    assert set(doc["large"]) == set(doc["small"]) >= {"overview", "models", "routes", "voting", "run page", "search: text", "search: key", "search: route", "keys page"}
    assert all(v["p95_ms"] > 0 for v in doc["large"].values())
    w = doc["write_sqlite"]
    assert w["rows"] > 300 * 4 and w["store_rows_per_s"] > 0 and w["bare_rows_per_s"] > 0
