"""Reports over the trace store: by model (calls, tokens, cost, latency, errors, retries, fallbacks)
and by route (decisions, share, mean confidence, outcomes, low-confidence count). Pure functions of
the rows, so any backend can use them."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import ConfigError
from ..store.base import CallRow, DecisionRow, RunRow

if TYPE_CHECKING:
    from ..store.base import RunReader

__all__ = ["budget_columns", "by_audit", "by_model", "by_route", "by_vote", "by_workflow", "parse_since"]


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``30m``, ``12h``, ``1d``, ``2w`` -> a unix time that long ago (None: no limit)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ConfigError(f"--since takes a duration like 30m, 12h, 1d or 2w, not {text!r}")
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return (now if now is not None else time.time()) - float(m.group(1)) * mult


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else 0.0


def call_failed(c: CallRow) -> bool:
    """A call that failed; a call cancelled on purpose (a vote decided early, a guard withheld) is not a failure."""
    return not c.ok and c.error_type != "CancelledError"


def by_model(calls: Sequence[CallRow]) -> list[dict[str, Any]]:
    groups: dict[str, list[CallRow]] = {}
    for c in calls:
        groups.setdefault(c.model, []).append(c)
    out = []
    for model, cs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lat = [c.latency_s * 1000 for c in cs]
        out.append({
            "model": model, "calls": len(cs), "input_tokens": sum(c.input_tokens for c in cs),
            "output_tokens": sum(c.output_tokens for c in cs), "cost_usd": round(sum(c.cost_usd for c in cs), 8),
            "latency_p50_ms": round(_pct(lat, 50), 2), "latency_p95_ms": round(_pct(lat, 95), 2),
            "error_rate": round(sum(call_failed(c) for c in cs) / len(cs), 4), "retries": sum(c.retries for c in cs),
            "cancelled": sum(c.error_type == "CancelledError" for c in cs),
            "fallback_rate": round(sum(c.fallback is not None for c in cs) / len(cs), 4),
            "cache_hit_rate": round(sum(c.cached for c in cs) / len(cs), 4), "saved_usd": round(sum(c.saved_usd for c in cs), 8),
        })
    return out


def by_route(decisions: Sequence[DecisionRow], *, low_confidence: float = 0.5) -> list[dict[str, Any]]:
    """Decisions by router and route (two routers' ``billing`` are two rows)."""
    groups: dict[tuple[str, str], list[DecisionRow]] = {}
    for d in decisions:
        groups.setdefault((d.router or "", str(d.route)), []).append(d)
    n = max(1, len(decisions))
    out = []
    for (router, route), ds in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        outcomes: dict[str, int] = {}
        for d in ds:
            outcomes[d.outcome] = outcomes.get(d.outcome, 0) + 1
        out.append({
            "router": router, "route": route, "decisions": len(ds), "share": round(len(ds) / n, 4),
            "mean_confidence": round(float(np.mean([d.confidence for d in ds])), 4),
            "low_confidence": sum(d.confidence < low_confidence for d in ds), "outcomes": outcomes,
            "latency_p50_ms": round(_pct([d.latency_s * 1000 for d in ds], 50), 3),
        })
    return out


def by_vote(verdicts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Voting: verdicts per name, mean agreement, low-agreement count, samples used vs planned."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for v in verdicts:
        groups.setdefault(v["name"], []).append(v)
    out = []
    for name, vs in sorted(groups.items()):
        used, planned = sum(v["samples_used"] for v in vs), sum(v["samples_planned"] for v in vs)
        outcomes: dict[str, int] = {}
        for v in vs:
            outcomes[v["outcome"]] = outcomes.get(v["outcome"], 0) + 1
        out.append({
            "name": name, "verdicts": len(vs), "mean_agreement": round(float(np.mean([v["agreement"] for v in vs])), 4),
            "low_agreement": sum(v["agreement"] < 0.5 for v in vs), "samples_used": used, "samples_planned": planned,
            "samples_saved": planned - used, "outcomes": outcomes,
        })
    return out


def by_workflow(runs: Sequence[RunRow]) -> list[dict[str, Any]]:
    """Runs per workflow: count, status mix, cost, tokens, end-to-end latency p50/p95."""
    groups: dict[str, list[RunRow]] = {}
    for r in runs:
        groups.setdefault(r.workflow, []).append(r)
    out = []
    for wf, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        status: dict[str, int] = {}
        for r in rs:
            status[r.status] = status.get(r.status, 0) + 1
        lat = [r.latency_s * 1000 for r in rs if r.latency_s]
        out.append({
            "workflow": wf, "runs": len(rs), "status": status, "cost_usd": round(sum(r.cost_usd for r in rs), 8),
            "input_tokens": sum(r.input_tokens for r in rs), "output_tokens": sum(r.output_tokens for r in rs),
            "latency_p50_ms": round(_pct(lat, 50), 1), "latency_p95_ms": round(_pct(lat, 95), 1),
            "error_rate": round(sum(r.status == "error" for r in rs) / len(rs), 4),
        })
    return out


def budget_columns(rows: list[dict[str, Any]], spend: Any, store: RunReader, now: float | None = None) -> list[dict[str, Any]]:
    """Add ``budget`` to each by-model row: the model budgets of ``spend`` (a SpendControl) with the
    spend the store recorded in their current period (all time for a budget without a period)."""
    from .._types import period_start

    now = time.time() if now is None else now
    models = {r["model"] for r in rows} | {b.match for b in spend.budgets if b.scope == "model" and b.match != "*"}
    have = {r["model"] for r in rows}
    for m in sorted(models - have):
        rows.append({"model": m, "calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "latency_p50_ms": 0.0,
                     "latency_p95_ms": 0.0, "error_rate": 0.0, "retries": 0, "fallback_rate": 0.0})
    for r in rows:
        out = []
        for b in spend.budgets:
            if b.scope != "model" or b.match not in ("*", r["model"]):
                continue
            start = period_start(b.period, now) if b.period else None
            spent = store.spend(since=start, model=r["model"])
            out.append({"budget": b.label, "period": b.period or "total", "limit_usd": b.limit_usd, "spent_usd": round(spent, 8),
                        "used": round(spent / b.limit_usd, 4) if b.limit_usd else 1.0})
        r["budget"] = out
    return rows


def by_audit(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compliance audit: per model and data class, how many requests were sent, redacted, refused."""
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for a in records:
        for c in a["data_classes"] or ["(none)"]:
            g = groups.setdefault((a["model"], c), {})
            g[a["action"]] = g.get(a["action"], 0) + 1
    return [{"model": m, "data_class": c, "sent": g.get("sent", 0), "redacted": g.get("redacted", 0), "refused": g.get("refused", 0)}
            for (m, c), g in sorted(groups.items())]


def by_queue(items: Sequence[dict[str, Any]], decisions: Sequence[DecisionRow], fits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The escalation queues: volume, status mix, time to resolve (p50/p90), and per queue the
    escalation rate of its router's decisions before and after that router's last refit."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        groups.setdefault(it["queue"], []).append(it)
    last_fit = {f["router"]: f["at"] for f in fits}  # fits come oldest first: the last one wins
    out = []
    for q, its in sorted(groups.items()):
        status: dict[str, int] = {}
        for it in its:
            status[it["status"]] = status.get(it["status"], 0) + 1
        waits = [it["resolved_at"] - it["created_at"] for it in its if it["resolved_at"]]
        routers = {it["router"] for it in its if it.get("router")}
        row: dict[str, Any] = {"queue": q, "items": len(its), "status": status,
                               "resolve_p50_s": round(float(np.percentile(waits, 50)), 1) if waits else "-",
                               "resolve_p90_s": round(float(np.percentile(waits, 90)), 1) if waits else "-",
                               "router": ", ".join(sorted(routers)) or "-", "escalation_before": "-", "escalation_after": "-"}
        fitted = [last_fit[r] for r in routers if r in last_fit]
        if fitted:
            at = max(fitted)
            ds = [d for d in decisions if d.router in routers]
            before, after = [d for d in ds if d.at < at], [d for d in ds if d.at >= at]
            asked = {it["run_id"] for it in its}  # a decision escalated when its run put an item on this queue
            row["escalation_before"], row["escalation_after"] = _rate(before, asked), _rate(after, asked)
        out.append(row)
    return out


def _rate(ds: Sequence[DecisionRow], asked: set[str]) -> str:
    return f"{sum(d.run_id in asked for d in ds) / len(ds):.1%} of {len(ds)}" if ds else "-"
