"""Evaluation: accuracy, macro-F1, abstain rate, per-route precision/recall/F1, confusion matrix,
decision latency, LLM cost, and a confidence-threshold sweep — from labelled rows.

The metrics are pure functions of (decisions, labels); ``evaluate`` only runs the router.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import ConfigError
from .._yaml import jsonl_objects
from .base import Decision, RouteInput, Router

__all__ = ["EvalReport", "LabeledRow", "evaluate", "load_jsonl", "metrics", "threshold_sweep"]

ABSTAIN = "(none)"


@dataclass(frozen=True, slots=True)
class LabeledRow:
    input: RouteInput
    label: str | None
    line: int = 0


def load_jsonl(path: str | Path, *, routes: Sequence[str] | None = None) -> list[LabeledRow]:
    """Rows ``{"text": ..., "label": ..., <fields>...}``. Errors name the file, line and problem."""
    p = Path(path)
    rows: list[LabeledRow] = []
    for n, doc in jsonl_objects(p):
        if not isinstance(doc.get("text"), str):
            raise ConfigError(f'{p}:{n}: each line needs a "text" string')
        label = doc.get("label")
        if label is not None and not isinstance(label, str):
            raise ConfigError(f'{p}:{n}: "label" must be a string or null')
        if routes is not None and label is not None and label not in routes:
            raise ConfigError(f"{p}:{n}: label {label!r} is not a route ({', '.join(routes)})")
        fields = {k: v for k, v in doc.items() if k != "label"}
        rows.append(LabeledRow(doc["text"] if set(fields) == {"text"} else fields, label, n))
    if not rows:
        raise ConfigError(f"{p}: no rows")
    return rows


@dataclass
class EvalReport:
    n: int
    accuracy: float
    macro_f1: float
    abstain_rate: float  # rows the router did not answer itself: abstained, fell back, escalated or sent nowhere
    answered_accuracy: float  # accuracy on the rows it answered
    per_route: dict[str, dict[str, float]]
    labels: list[str]
    confusion: list[list[int]]  # rows = true label, columns = routed-to (labels order)
    latency_p50_ms: float
    latency_p99_ms: float
    cost_usd: float
    outcomes: dict[str, int]
    stages: dict[str, int]
    sweep: list[dict[str, float]] = field(default_factory=list)
    top_confusions: list[dict[str, Any]] = field(default_factory=list)  # (true label, routed to, count), most first
    reliability: list[dict[str, float]] = field(default_factory=list)  # confidence bins of the answered rows
    calibration_error: float = 0.0  # expected calibration error of the answered rows' confidence
    latency_basis: str = "per decision"  # or "batch mean": one batch's time shared out (not percentiles)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def metrics(decisions: Sequence[Decision], labels: Sequence[str | None], route_names: Sequence[str]) -> EvalReport:
    n = len(decisions)
    if n == 0 or n != len(labels):
        raise ConfigError("metrics() needs as many decisions as labels, and at least one")
    names = list(route_names)
    for y in labels:
        if y is not None and y not in names:
            names.append(y)
    cols = names + [ABSTAIN]
    idx = {k: i for i, k in enumerate(cols)}
    conf = np.zeros((len(cols), len(cols)), dtype=int)
    for d, y in zip(decisions, labels, strict=True):
        conf[idx[y if y is not None else ABSTAIN], idx[d.route if d.route is not None else ABSTAIN]] += 1
    correct = sum(d.route == y for d, y in zip(decisions, labels, strict=True))
    # answered = the router itself sent the row to a route it chose; a fallback, an escalation or no
    # route at all is an abstention, whatever candidate the router kept for the record in `chosen`
    answered = [(d, y) for d, y in zip(decisions, labels, strict=True) if d.outcome == "matched" and d.route is not None]
    per: dict[str, dict[str, float]] = {}
    f1s = []
    for r in names:
        tp = int(conf[idx[r], idx[r]])
        pred = int(conf[:, idx[r]].sum())
        sup = int(conf[idx[r], :].sum())
        p = tp / pred if pred else 0.0
        rc = tp / sup if sup else 0.0
        f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
        per[r] = {"precision": round(p, 4), "recall": round(rc, 4), "f1": round(f1, 4), "support": sup}
        if sup:
            f1s.append(f1)
    lat = np.asarray([d.latency_s for d in decisions]) * 1000
    outcomes: dict[str, int] = {}
    stages: dict[str, int] = {}
    for d in decisions:
        outcomes[d.outcome] = outcomes.get(d.outcome, 0) + 1
        if d.stage:
            stages[d.stage] = stages.get(d.stage, 0) + 1
    top = sorted(((int(conf[i, j]), cols[i], cols[j]) for i in range(len(cols)) for j in range(len(cols) - 1) if i != j and conf[i, j]),  # misroutes, not abstentions
                 key=lambda t: (-t[0], t[1], t[2]))[:15]
    bins, ece = reliability(answered)
    return EvalReport(
        top_confusions=[{"label": a, "routed": b, "count": c} for c, a, b in top],
        reliability=bins,
        calibration_error=ece,
        n=n,
        accuracy=round(correct / n, 4),
        macro_f1=round(float(np.mean(f1s)) if f1s else 0.0, 4),
        abstain_rate=round(1 - len(answered) / n, 4),
        answered_accuracy=round(sum(d.route == y for d, y in answered) / len(answered), 4) if answered else 0.0,
        per_route=per,
        labels=cols,
        confusion=conf.tolist(),
        latency_p50_ms=round(float(np.percentile(lat, 50)), 4),
        latency_p99_ms=round(float(np.percentile(lat, 99)), 4),
        cost_usd=round(sum(d.cost_usd for d in decisions), 8),
        outcomes=outcomes,
        stages=stages,
    )


def reliability(answered: Sequence[tuple[Decision, str | None]], bins: int = 10) -> tuple[list[dict[str, float]], float]:
    """Equal-width confidence bins of the answered rows: mean confidence against accuracy (a
    calibrated router sits on the diagonal), and the expected calibration error."""
    out: list[dict[str, float]] = []
    ece = 0.0
    n = max(1, len(answered))
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inb = [(d.confidence, d.route == y) for d, y in answered if lo <= d.confidence < hi or (b == bins - 1 and d.confidence >= hi)]
        if not inb:
            continue
        c = sum(x for x, _ in inb) / len(inb)
        a = sum(ok for _, ok in inb) / len(inb)
        ece += len(inb) / n * abs(c - a)
        out.append({"low": lo, "high": hi, "n": len(inb), "confidence": round(c, 4), "accuracy": round(a, 4)})
    return out, round(ece, 4)


def threshold_sweep(
    decisions: Sequence[Decision], labels: Sequence[str | None], fallback: str | None, steps: int = 21
) -> list[dict[str, float]]:
    """Accuracy and coverage if decisions below confidence t went to the fallback instead."""
    out = []
    n = len(decisions)
    for t in np.linspace(0, 1, steps):
        ok = cov = 0
        for d, y in zip(decisions, labels, strict=True):
            confident = d.chosen is not None and d.confidence >= t
            final = d.chosen if confident else fallback
            cov += confident
            ok += final == y
        out.append({"threshold": round(float(t), 3), "accuracy": round(ok / n, 4), "coverage": round(cov / n, 4)})
    return out


async def warm_up(router: Router) -> None:
    """Load models and build indexes before anything is timed."""
    stages = getattr(router, "stages", None)
    for r in [st.router for st in stages] if stages else [router]:
        prep = getattr(r, "prepare", None)
        if prep is not None:
            await prep(warm=True)


def _concurrency(router: Any) -> int:
    """Decisions in flight while evaluating: a router's (or its stages') ``concurrency`` (the LLM
    router: its model's slots), else one at a time."""
    stages = getattr(router, "stages", None)
    parts = [st.router for st in stages] if stages else [router]
    return max([int(getattr(r, "concurrency", 1) or 1) for r in parts] + [1])


async def evaluate(router: Router, rows: Sequence[LabeledRow], *, batch: bool = False, concurrency: int | None = None) -> EvalReport:
    """Route every row and score the decisions. By default each row is decided on its own (at most
    ``concurrency`` at once: the router's own, else one), so the latency percentiles are those of
    single decisions; ``batch=True`` routes all rows in one batch (faster; latency is then the
    batch's mean per row, not a percentile)."""
    import asyncio

    inputs = [r.input for r in rows]
    await warm_up(router)
    if batch:
        decisions = await router.decide_many(inputs)
    else:
        sem = asyncio.Semaphore(concurrency or _concurrency(router))

        async def one(x: RouteInput) -> Decision:
            async with sem:
                return await router.decide(x)

        decisions = list(await asyncio.gather(*(one(x) for x in inputs)))
    labels = [r.label for r in rows]
    rep = metrics(decisions, labels, router.route_names)
    rep.sweep = threshold_sweep(decisions, labels, router.fallback)
    if batch:
        rep.latency_basis = "batch mean"
    return rep
