"""Hourly rollups of calls and decisions, so the dashboard never scans the big tables.

The writer (``sqlite.py`` ``_write``) adds each batch of calls and decisions to per-hour totals in
the same transaction. It only ever increments (``ON CONFLICT ... DO UPDATE SET n = n + excluded.n``),
so several processes writing one store keep them exact. Two kinds of totals are kept:

- ``call_rollups``: per model and hour — calls, tokens, cost, errors, cancelled, retries,
  fallbacks, cache hits, money saved. ``call_latency`` holds a latency histogram with buckets
  10% wide, which gives percentiles within 5%.
- ``decision_rollups``: per router, route and outcome — count, confidence sum, low-confidence
  count. ``decision_hist`` holds confidence (20 buckets) and latency histograms.
- ``key_rollups`` (migration 16): per gateway key, team and hour — calls, tokens, cost; the key of
  a batch's calls is read from their runs (one indexed lookup per batch), so a key's or a team's
  spend (``spend(key=|team=)``, the keys page, a budget's seed) reads hours, not its runs.

Migration 14 builds these totals from the rows already stored. A window that starts inside an
hour reads the full hours from the rollups and the part of the first hour from the raw rows
(``calls_time`` / ``decisions_time`` indexes), so its totals are exact and it reads at most one
hour of raw rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ._read import where

__all__ = ["SLOT", "Rollups", "conf_bucket", "key_rollup_statement", "lat_bucket", "percentile", "rollup_statements"]

SLOT = 3600.0  # seconds per rollup slot
_LOG_STEP = math.log(1.1)
_ERR = "CASE WHEN ok = 0 AND COALESCE(error_type, '') <> 'CancelledError' THEN 1 ELSE 0 END"


def lat_bucket(seconds: float) -> int:
    """The latency histogram bucket of ``seconds`` (buckets 10% wide; the same formula as migration 14)."""
    return math.floor(math.log(max(seconds, 1e-4)) / _LOG_STEP)


def conf_bucket(c: float) -> int:
    return min(19, max(0, math.floor(c * 20)))


def percentile(hist: dict[int, int], q: float) -> float:
    """The q-th percentile (0-100) in seconds of a latency histogram (a bucket's geometric middle)."""
    n = sum(hist.values())
    if not n:
        return 0.0
    want, cum = q / 100 * n, 0
    for b in sorted(hist):
        cum += hist[b]
        if cum >= want:
            return math.exp((b + 0.5) * _LOG_STEP)
    return math.exp((max(hist) + 0.5) * _LOG_STEP)


def _slot(t: float) -> float:
    return math.floor(t / SLOT) * SLOT


_UPSERTS = {
    "call": "INSERT INTO call_rollups (model, slot, calls, input_tokens, output_tokens, cost_usd, errors, cancelled, retries, fallbacks, "
            "cached, saved_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, slot) DO UPDATE SET "
            "calls = call_rollups.calls + excluded.calls, input_tokens = call_rollups.input_tokens + excluded.input_tokens, "
            "output_tokens = call_rollups.output_tokens + excluded.output_tokens, cost_usd = call_rollups.cost_usd + excluded.cost_usd, "
            "errors = call_rollups.errors + excluded.errors, cancelled = call_rollups.cancelled + excluded.cancelled, "
            "retries = call_rollups.retries + excluded.retries, fallbacks = call_rollups.fallbacks + excluded.fallbacks, "
            "cached = call_rollups.cached + excluded.cached, saved_usd = call_rollups.saved_usd + excluded.saved_usd",
    "call_lat": "INSERT INTO call_latency (model, slot, bucket, n) VALUES (?, ?, ?, ?) ON CONFLICT (model, slot, bucket) "
                "DO UPDATE SET n = call_latency.n + excluded.n",
    "decision": "INSERT INTO decision_rollups (router, route, outcome, slot, n, conf_sum, low) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (router, route, outcome, slot) DO UPDATE SET n = decision_rollups.n + excluded.n, "
                "conf_sum = decision_rollups.conf_sum + excluded.conf_sum, low = decision_rollups.low + excluded.low",
    "decision_hist": "INSERT INTO decision_hist (router, route, slot, kind, bucket, n) VALUES (?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (router, route, slot, kind, bucket) DO UPDATE SET n = decision_hist.n + excluded.n",
    "key": "INSERT INTO key_rollups (key_id, team, slot, calls, input_tokens, output_tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (key_id, team, slot) DO UPDATE SET calls = key_rollups.calls + excluded.calls, "
           "input_tokens = key_rollups.input_tokens + excluded.input_tokens, output_tokens = key_rollups.output_tokens + excluded.output_tokens, "
           "cost_usd = key_rollups.cost_usd + excluded.cost_usd",
}


def key_rollup_statement(calls: Sequence[tuple[Any, ...]], keys: dict[str, tuple[str, str]]) -> tuple[str, list[tuple[Any, ...]]]:
    """The upsert that adds a batch's calls of runs with a key (``keys``: run id -> (key, team)) to ``key_rollups``."""
    tot: dict[tuple[str, str, float], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for r in calls:
        k = keys.get(r[0])
        if k is not None:
            t = tot[(k[0], k[1], _slot(r[2]))]
            t[0] += 1
            t[1] += r[5] or 0
            t[2] += r[6] or 0
            t[3] += r[7] or 0.0
    return _UPSERTS["key"], [(*k, *v) for k, v in tot.items()]


def rollup_statements(kind: str, rows: Sequence[tuple[Any, ...]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The upserts that add a batch of ``call`` or ``decision`` rows (the writer's tuples) to the rollups."""
    if kind == "call":  # (run_id, model, started_at, latency_s, ok, in, out, cost, error_type, retries, fallback, stream, tools, cached, saved)
        tot: dict[tuple[str, float], list[float]] = defaultdict(lambda: [0] * 10)
        lat: dict[tuple[str, float, int], int] = defaultdict(int)
        for r in rows:
            k = (r[1], _slot(r[2]))
            t = tot[k]
            for i, v in enumerate((1, r[5], r[6], r[7], int(not r[4] and r[8] != "CancelledError"), int(r[8] == "CancelledError"),
                                   r[9], int(r[10] is not None), r[13], r[14])):
                t[i] += v or 0
            lat[(r[1], k[1], lat_bucket(r[3]))] += 1
        return [(_UPSERTS["call"], [(*k, *v) for k, v in tot.items()]), (_UPSERTS["call_lat"], [(*k, n) for k, n in lat.items()])]
    if kind == "decision":  # (run_id, router, route, chosen, confidence, outcome, kind, stage, reason, latency_s, at, input, scores)
        dt: dict[tuple[str, str, str, float], list[float]] = defaultdict(lambda: [0, 0.0, 0])
        hist: dict[tuple[str, str, float, str, int], int] = defaultdict(int)
        for r in rows:
            route, slot = r[2] or "", _slot(r[10])
            t = dt[(r[1], route, r[5], slot)]
            t[0] += 1
            t[1] += r[4]
            t[2] += int(r[4] < 0.5)
            hist[(r[1], route, slot, "conf", conf_bucket(r[4]))] += 1
            hist[(r[1], route, slot, "lat", lat_bucket(r[9]))] += 1
        return [(_UPSERTS["decision"], [(*k, *v) for k, v in dt.items()]),
                (_UPSERTS["decision_hist"], [(*k, n) for k, n in hist.items()])]
    return []


class _ModelTotals:
    __slots__ = ("hist", "t")

    def __init__(self) -> None:
        self.t = [0.0] * 10  # calls, in, out, cost, errors, cancelled, retries, fallbacks, cached, saved
        self.hist: dict[int, int] = defaultdict(int)

    def row(self, model: str) -> dict[str, Any]:
        n, i, o, cost, err, canc, retr, fb, hit, saved = self.t
        n = n or 1
        return {"model": model, "calls": int(self.t[0]), "errors": int(err), "cached": int(hit), "input_tokens": int(i), "output_tokens": int(o), "cost_usd": round(cost, 8),
                "latency_p50_ms": round(percentile(self.hist, 50) * 1000, 2), "latency_p95_ms": round(percentile(self.hist, 95) * 1000, 2),
                "error_rate": round(err / n, 4), "retries": int(retr), "cancelled": int(canc), "fallback_rate": round(fb / n, 4),
                "cache_hit_rate": round(hit / n, 4), "saved_usd": round(saved, 8)}


class Rollups:
    """Readers over the rollups (a mixin of the store classes, like ``Readers``)."""

    def _reading(self) -> Any:  # pragma: no cover - provided by the store
        raise NotImplementedError

    def _window(self, since: float | None) -> tuple[float | None, float | None]:
        """(first full slot, end of the partial slot read raw): (None, None) for all time."""
        if since is None:
            return None, None
        full = math.ceil(since / SLOT) * SLOT
        return full, (full if full > since else None)

    def key_spend(self, since: float | None, key: str | None, team: str | None) -> float:
        """USD spent by a key (and/or team) since ``since``: the full hours from ``key_rollups``, the
        first partial hour from its raw calls (by time, joined to their runs)."""
        db = self._reading()
        full, part_end = self._window(since)
        w, args = where(("key_id =", key), ("team =", team), ("slot >=", full))
        total = float(next(iter(db.execute(f"SELECT COALESCE(SUM(cost_usd), 0) FROM key_rollups{w}", args)))[0] or 0.0)
        if part_end is not None:
            w, args = where(("c.started_at >=", since), ("c.started_at <", part_end), ("r.key_id =", key), ("r.team =", team))
            total += float(next(iter(db.execute(f"SELECT COALESCE(SUM(c.cost_usd), 0) FROM calls c JOIN runs r ON r.run_id = c.run_id{w}",
                                                args)))[0] or 0.0)
        return total

    def model_summary(self, since: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[float, float, float]]]:
        """``by_model`` rows for the window (calls, tokens, cost, latency p50/p95 within 5%, error,
        fallback and cache-hit rates), the same over all models, and the window's per-hour
        ``(slot, calls, cost)``; from the rollups."""
        db = self._reading()
        full, part_end = self._window(since)
        per: dict[str, _ModelTotals] = defaultdict(_ModelTotals)
        slots: dict[float, list[float]] = defaultdict(lambda: [0.0, 0.0])
        w, args = ("WHERE slot >= ?", [full]) if full is not None else ("", [])
        for r in db.execute("SELECT model, slot, calls, input_tokens, output_tokens, cost_usd, errors, cancelled, retries, fallbacks, cached, "
                            f"saved_usd FROM call_rollups {w}", args):
            t = per[r[0]].t
            for i in range(10):
                t[i] += r[2 + i] or 0
            slots[r[1]][0] += r[2]
            slots[r[1]][1] += r[5] or 0
        for m, b, n in db.execute(f"SELECT model, bucket, n FROM call_latency {w}", args):
            per[m].hist[b] += n
        if part_end is not None:  # the first, partial hour of the window: its raw rows (indexed by time)
            self._add_raw_calls(db, per, slots, since, part_end)
        rows = sorted((t.row(m) for m, t in per.items()), key=lambda r: -r["calls"])
        total = _ModelTotals()
        for t in per.values():
            total.t = [a + b for a, b in zip(total.t, t.t, strict=True)]
            for b, n in t.hist.items():
                total.hist[b] += n
        return rows, total.row("all"), sorted((s, v[0], v[1]) for s, v in slots.items())

    def _add_raw_calls(self, db: Any, per: dict[str, _ModelTotals], slots: dict[float, list[float]], lo: float | None, hi: float) -> None:
        for m, at, lat, ok, i, o, cost, et, retr, fb, hit, saved in db.execute(
                "SELECT model, started_at, latency_s, ok, input_tokens, output_tokens, cost_usd, error_type, retries, fallback, cached, "
                "saved_usd FROM calls WHERE started_at >= ? AND started_at < ?", (lo, hi)):
            t = per[m]
            for k, v in enumerate((1, i, o, cost, int(not ok and et != "CancelledError"), int(et == "CancelledError"), retr,
                                   int(fb is not None), hit, saved)):
                t.t[k] += v or 0
            t.hist[lat_bucket(lat)] += 1
            s = slots[_slot(at)]
            s[0] += 1
            s[1] += cost or 0

    def route_summary(self, since: float | None = None) -> tuple[list[dict[str, Any]], list[int], int]:
        """``by_route`` rows for the window, the confidence histogram (20 buckets) and the decision count."""
        db = self._reading()
        full, part_end = self._window(since)
        w, args = ("WHERE slot >= ?", [full]) if full is not None else ("", [])
        per: dict[tuple[str, str], dict[str, Any]] = {}
        conf = [0] * 20

        def entry(router: str, route: str) -> dict[str, Any]:
            return per.setdefault((router or "", route), {"n": 0, "conf": 0.0, "low": 0, "outcomes": defaultdict(int), "lat": defaultdict(int)})

        for router, route, outcome, n, cs, low in db.execute(f"SELECT router, route, outcome, n, conf_sum, low FROM decision_rollups {w}",
                                                             args):
            e = entry(router, route)
            e["n"] += n
            e["conf"] += cs
            e["low"] += low
            e["outcomes"][outcome] += n
        for router, route, kind, b, n in db.execute(f"SELECT router, route, kind, bucket, n FROM decision_hist {w}", args):
            if kind == "conf":
                conf[b] += n
            else:
                entry(router, route)["lat"][b] += n
        if part_end is not None:
            for router, route, c, outcome, lat in db.execute(
                    "SELECT router, route, confidence, outcome, latency_s FROM decisions WHERE at >= ? AND at < ?", (since, part_end)):
                e = entry(router, route or "")
                e["n"] += 1
                e["conf"] += c
                e["low"] += int(c < 0.5)
                e["outcomes"][outcome] += 1
                e["lat"][lat_bucket(lat)] += 1
                conf[conf_bucket(c)] += 1
        total = sum(e["n"] for e in per.values())
        rows = [{"router": k[0], "route": k[1] or "None", "decisions": e["n"], "share": round(e["n"] / max(1, total), 4),
                 "mean_confidence": round(e["conf"] / max(1, e["n"]), 4), "low_confidence": e["low"], "outcomes": dict(e["outcomes"]),
                 "latency_p50_ms": round(percentile(e["lat"], 50) * 1000, 3)} for k, e in per.items() if e["n"]]
        return sorted(rows, key=lambda r: -r["decisions"]), conf, total

    def low_confidence(self, since: float | None = None, *, below: float = 0.5, limit: int = 30) -> list[Any]:
        """The newest decisions under ``below`` confidence (read backwards on the ``decisions_time`` index)."""
        from .base import DecisionRow

        w, args = ("AND at >= ?", [since]) if since is not None else ("", [])
        cols = ", ".join(self._DECISION_COLS[:12])  # type: ignore[attr-defined]  # all but the scores (Readers)
        return [DecisionRow(*r) for r in self._reading().execute(
            f"SELECT {cols} FROM decisions WHERE confidence < ? {w} ORDER BY at DESC LIMIT ?", [below, *args, limit])]

    def vote_summary(self, since: float | None = None) -> tuple[list[dict[str, Any]], list[int]]:
        """``by_vote`` rows and the agreement histogram (10 buckets), aggregated in SQL over the window's
        verdicts (one row per vote; a window reads the ``verdicts_time`` index range)."""
        db = self._reading()
        w, args = ("WHERE at >= ?", [since]) if since is not None else ("", [])
        buckets = ", ".join(f"SUM(CASE WHEN agreement >= {i / 10} AND agreement < {(i + 1) / 10} THEN 1 ELSE 0 END)" for i in range(9))
        hist = db.execute(f"SELECT {buckets}, SUM(CASE WHEN agreement >= 0.9 THEN 1 ELSE 0 END) FROM verdicts {w}", args).fetchone()
        outcomes: dict[str, dict[str, int]] = defaultdict(dict)
        for name, outcome, n in db.execute(f"SELECT name, outcome, COUNT(*) FROM verdicts {w} GROUP BY name, outcome", args):
            outcomes[name][outcome] = n
        rows = [{"name": name, "verdicts": n, "mean_agreement": round(mean or 0.0, 4), "low_agreement": low or 0, "samples_used": used or 0,
                 "samples_planned": planned or 0, "samples_saved": (planned or 0) - (used or 0), "outcomes": outcomes[name]}
                for name, n, mean, low, used, planned in db.execute(
                    "SELECT name, COUNT(*), AVG(agreement), SUM(CASE WHEN agreement < 0.5 THEN 1 ELSE 0 END), SUM(samples_used), "
                    f"SUM(samples_planned) FROM verdicts {w} GROUP BY name ORDER BY name", args)]
        return rows, [int(x or 0) for x in hist]

    def count_runs(self, since: float | None = None) -> int:
        w, args = ("WHERE started_at >= ?", (since,)) if since is not None else ("", ())
        return int(self._reading().execute(f"SELECT COUNT(*) FROM runs {w}", args).fetchone()[0])

    def run_costs(self, run_ids: Iterable[str]) -> dict[str, tuple[float, int, int]]:
        """(cost, input tokens, output tokens) per run, summed over its calls by the run id's index."""
        ids = list(run_ids)
        if not ids:
            return {}
        rows = self._reading().execute(
            f"SELECT run_id, SUM(cost_usd), SUM(input_tokens), SUM(output_tokens) FROM calls WHERE run_id IN ({', '.join('?' * len(ids))}) "
            "GROUP BY run_id", ids)
        return {r[0]: (r[1] or 0.0, r[2] or 0, r[3] or 0) for r in rows}
