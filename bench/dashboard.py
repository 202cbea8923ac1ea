"""The dashboard at scale, and the trace store's write rate.

**Pages.** The store is filled with N runs spread over the last 7 days. Each run has a model call,
a routing decision and a step, and every 10th run a voting verdict. Then each dashboard page is
rendered ``--reps`` times, the way the gateway renders it: overview, models, routes, voting, a
random run's page, the runs search (a workflow filter, a status filter, a run-id prefix, text, a
key, a team over a day, a route, a key's second page) and the keys page (7 keys, spend against
their budgets). The bench prints p50/p95 per page at ``--small`` and ``--large`` runs, and their ratio
(target: p95 ≤ 200 ms at 100k runs, every query on an index).

**Write rate.** Rows per second the store's writer commits (a run with a call, a decision and a
step is 4 rows), for SQLite and, with ``--pg URL``, PostgreSQL. The baseline, measured in the same
run, is the same rows as bare ``executemany`` inserts on a second connection to the same database.

    python bench/dashboard.py                          # 1,000 vs 100,000 runs; SQLite write rate
    python bench/dashboard.py --large 20000 --pg postgresql://... --json
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

from turnout._scope import open_run  # noqa: E402
from turnout.models import Usage  # noqa: E402
from turnout.policies.trace import CallEvent  # noqa: E402
from turnout.routing.base import Decision  # noqa: E402
from turnout.server.dashboard import keys_page, page, run_detail, runs_page  # noqa: E402
from turnout.store import SQLiteStore, open_store  # noqa: E402

WORKFLOWS = ("support-triage", "summarise", "gateway")


def fill(store: SQLiteStore, n: int, seed: int = 0) -> list[str]:
    """N runs (their calls spread over the last 7 days), through the store's own writer (rows of the real shape)."""
    rng = random.Random(seed)
    now, ids = time.time(), []
    for i in range(n):
        at = now - rng.random() * 7 * 86400
        wf = WORKFLOWS[i % 3]
        tags = {"key": f"k{i % 7}", "team": f"team{i % 3}"}
        with open_run(store, wf, f"ticket {i}: my invoice {rng.randint(1, 9999)} was charged twice", tags=tags) as run:
            store.record(CallEvent(model=("cheap", "strong")[i % 2], started_at=at, latency_s=rng.random() * 0.5, ok=i % 50 != 0,
                                   usage=Usage(100, 20), cost_usd=1e-5 * (1 + i % 2),
                                   error_type=None if i % 50 else "ProviderTimeout"))
            store.record_decision(Decision(route=("billing", "tech", "other")[i % 3], confidence=rng.random()), router="triage")
            store.record_step("answer", "call", latency_s=0.1)
            if i % 10 == 0:
                store.record_verdict(_Verdict(rng.random()), name="vote")
            run.status = "ok" if i % 50 else "error"
        ids.append(run.run_id)
        if i % 5000 == 4999:
            store.flush()
    store.flush()
    return ids


class _Verdict:
    def __init__(self, agreement: float) -> None:
        self.answer, self.outcome, self.agreement, self.samples_used, self.samples_planned = "42", "decided", agreement, 3, 5
        self.abstained, self.counts, self.cost_usd = 0, {"42": 3}, 1e-5


def _times(fn, reps: int) -> dict[str, float]:
    fn()  # warm (the page cache of the database file, not an application cache)
    xs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t0)
    xs.sort()
    return {"p50_ms": round(statistics.median(xs) * 1000, 2), "p95_ms": round(xs[min(len(xs) - 1, int(0.95 * len(xs)))] * 1000, 2)}


def pages(n: int, reps: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(Path(d) / "dash.db", batch=5000)
        ids = fill(store, n)
        rng = random.Random(1)
        out = {name: _times(lambda name=name: page(name, store, None), reps) for name in ("overview", "models", "routes", "voting")}
        out["overview (1 day)"] = _times(lambda: page("overview", store, "1d"), reps)
        out["run page"] = _times(lambda: run_detail(store, rng.choice(ids)), reps)
        out["search: workflow"] = _times(lambda: runs_page(store, {"workflow": "summarise"}), reps)
        out["search: status"] = _times(lambda: runs_page(store, {"status": "error"}), reps)
        out["search: run id"] = _times(lambda: runs_page(store, {"q": rng.choice(ids)[:6]}), reps)
        out["search: text"] = _times(lambda: runs_page(store, {"q": "charged twice"}), reps)
        out["search: key"] = _times(lambda: runs_page(store, {"key": f"k{rng.randrange(7)}"}), reps)
        out["search: team, 1 day"] = _times(lambda: runs_page(store, {"team": "team1", "since": "1d"}), reps)
        out["search: route"] = _times(lambda: runs_page(store, {"route": "tech", "router": "triage"}), reps)
        cursor = repr(store.search_runs(key="k3", limit=50)[-1].started_at)  # the "older" link of the key's first page
        out["search: key, page 2"] = _times(lambda: runs_page(store, {"key": "k3", "before": cursor}), reps)
        for i in range(7):  # the gateway's keys (k0..k6, as the runs are tagged), half with a daily budget
            store.key_insert({"key_id": f"k{i}", "name": f"app-{i}", "hash": f"h{i}", "models": ["*"], "workflows": ["*"], "rpm": None,
                              "tpm": None, "budget_usd": 5.0 if i % 2 else None, "period": "day" if i % 2 else None,
                              "team": f"team{i % 3}", "created_at": time.time(), "revoked_at": None, "cache": None})
        out["keys page"] = _times(lambda: keys_page(store), reps)
        store.close()
    return out


def write_rate(target: str | None, n: int) -> dict[str, float]:
    """Rows/s the store's writer commits (its queue filled first, then one ``flush`` timed: the
    inserts, the scrubbing and the rollups), vs bare ``executemany`` of the same rows' tables on a
    second connection to the same database."""
    with tempfile.TemporaryDirectory() as d:
        store = open_store(target or str(Path(d) / "w.db"), batch=10**9, flush_interval=3600, max_pending=10**9)
        store.flush = lambda: None  # type: ignore[method-assign]  # hold the rows in the queue while it fills
        fill(store, n)
        del store.flush  # the real writer again
        rows = len(store._q)
        t0 = time.perf_counter()
        store.flush()
        store_s = time.perf_counter() - t0
        db = store._open()  # a second, bare connection: the baseline
        ph = store.dialect.placeholder
        tag = f"bare{time.time_ns()}"
        now = time.time()
        t0 = time.perf_counter()
        db.execute(store.dialect.begin_write)
        db.executemany(f"INSERT INTO runs (run_id, workflow, status, started_at, input, tags) VALUES ({', '.join([ph] * 6)})",
                       [(f"{tag}-{i}", "w", "ok", now, "x", "{}") for i in range(n)])
        db.executemany(f"INSERT INTO calls (run_id, model, started_at, latency_s, ok, input_tokens, output_tokens, cost_usd, retries, stream) "
                       f"VALUES ({', '.join([ph] * 10)})", [(f"{tag}-{i}", "m", now, 0.1, 1, 1, 1, 0.0, 0, 0) for i in range(n)])
        db.executemany(f"INSERT INTO decisions (run_id, router, route, chosen, confidence, outcome, kind, reason, latency_s, at) "
                       f"VALUES ({', '.join([ph] * 10)})", [(f"{tag}-{i}", "r", "a", "a", 0.5, "matched", "rule", "", 0.0, now)
                                                           for i in range(n)])
        db.executemany(f"INSERT INTO steps (run_id, name, kind, at, latency_s, status, cost_usd, detail) VALUES ({', '.join([ph] * 8)})",
                       [(f"{tag}-{i}", "s", "call", now, 0.1, "ok", 0.0, "{}") for i in range(n)])
        db.execute("COMMIT")
        bare_s = time.perf_counter() - t0
        db.close()
        store.close()
    return {"rows": rows, "store_rows_per_s": round(rows / store_s), "bare_rows_per_s": round((n * 4) / bare_s),
            "store_vs_bare": round((rows / store_s) / ((n * 4) / bare_s), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--writes", type=int, default=20_000, help="runs written for the write rate")
    ap.add_argument("--pg", default=None, help="a postgresql:// URL: measure its write rate too")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    small, large = pages(a.small, a.reps), pages(a.large, a.reps)
    doc: dict[str, object] = {"runs_small": a.small, "runs_large": a.large, "small": small, "large": large,
                              "ratio_p95": {k: round(large[k]["p95_ms"] / max(small[k]["p95_ms"], 1e-3), 2) for k in large},
                              "meets_200ms": all(v["p95_ms"] <= 200 for v in large.values())}
    doc["write_sqlite"] = write_rate(None, a.writes)
    if a.pg:
        doc["write_postgres"] = write_rate(a.pg, a.writes)
    if a.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"{'page':22} {'p50 ms':>8} {'p95 ms':>8}  at {a.small:,}  |  {'p50 ms':>8} {'p95 ms':>8}  at {a.large:,}  | p95 ratio")
    for k in large:
        print(f"{k:22} {small[k]['p50_ms']:8.2f} {small[k]['p95_ms']:8.2f}            |  {large[k]['p50_ms']:8.2f} "
              f"{large[k]['p95_ms']:8.2f}              | {doc['ratio_p95'][k]:.2f}x")  # type: ignore[index]
    print(f"every page p95 <= 200 ms at {a.large:,} runs: {'met' if doc['meets_200ms'] else 'NOT met'}")
    for k in ("write_sqlite", "write_postgres"):
        if k in doc:
            w = doc[k]
            print(f"{k[6:]} writes: {w['store_rows_per_s']:,} rows/s through the store's writer; bare executemany "  # type: ignore[index]
                  f"{w['bare_rows_per_s']:,} rows/s ({w['store_vs_bare']:.2f}x)")  # type: ignore[index]


if __name__ == "__main__":
    main()
