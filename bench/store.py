"""Trace-store reads that must not grow with the store: one run's detail (the gateway's
``GET /v1/runs/{id}`` and the dashboard's run page) at a small and a large store, in the same run.

Each store holds N runs, each with a call, a decision, a step and a verdict; the benchmark times
``run_detail`` for random runs and prints the median per lookup at both sizes and their ratio
(target ≤ 2×: every read goes through the run id's index; before, the page loaded every run and
filtered in Python, linear in N).

    python bench/store.py                      # 1,000 vs 100,000 runs
    python bench/store.py --small 200 --large 5000 --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from turnout.models import Usage  # noqa: E402
from turnout.policies.trace import CallEvent  # noqa: E402
from turnout.routing.base import Decision  # noqa: E402
from turnout.store import SQLiteStore  # noqa: E402


def fill(store: SQLiteStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        with store.run("bench", f"input {i}", tags={"key": "k"}) as rid:  # the rows below are attributed to it
            store.record(CallEvent(model="m", started_at=time.time(), latency_s=0.01, ok=True, usage=Usage(10, 5), cost_usd=1e-5))
            store.record_decision(Decision(route="a", confidence=0.9), router="r")
            store.record_step("s", "call", latency_s=0.01)
        ids.append(rid)
        if i % 5000 == 4999:
            store.flush()
    store.flush()
    return ids


def measure(n: int, lookups: int, seed: int = 0) -> float:
    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(Path(d) / "bench.db", batch=5000)
        ids = fill(store, n)
        rng = random.Random(seed)
        times = []
        for _ in range(lookups):
            rid = rng.choice(ids)
            t0 = time.perf_counter()
            assert store.run_detail(rid) is not None
            times.append(time.perf_counter() - t0)
        store.close()
        return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--lookups", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    small, large = measure(a.small, a.lookups), measure(a.large, a.lookups)
    doc = {"runs_small": a.small, "runs_large": a.large, "run_detail_ms_small": small * 1e3, "run_detail_ms_large": large * 1e3,
           "ratio": large / small}
    if a.json:
        print(json.dumps(doc))
    else:
        print(f"run_detail: {small * 1e3:.2f} ms at {a.small} runs, {large * 1e3:.2f} ms at {a.large} runs: "
              f"{large / small:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
