"""A/B experiments: deterministic assignment by key, per-variant outcomes in the store, and a
report with confidence intervals and a plain verdict.

``Experiment("router-v2", {"control": 0.5, "candidate": 0.5}).assign(user_id)`` always gives one
user the same variant (a hash of experiment name and key). Outcomes (cost, latency, error,
correct, score) are recorded with ``record_outcome``; ``experiment_report`` compares every variant
with the first: accuracy and error rate by a two-proportion z-test, cost/latency/score by Welch's
test (normal approximation), 95% intervals throughout. The verdict says which variant is better on
accuracy (or score), or that the difference is not yet significant.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError

__all__ = ["Experiment", "experiment_report", "wilson"]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Experiment:
    name: str
    variants: Mapping[str, float]

    def __post_init__(self) -> None:
        if len(self.variants) < 2:
            raise ConfigError(f"experiment {self.name!r} needs at least two variants")
        if any(w < 0 for w in self.variants.values()) or sum(self.variants.values()) <= 0:
            raise ConfigError(f"experiment {self.name!r}: traffic weights must be >= 0 and not all 0")

    def assign(self, key: str) -> str:
        """The variant for ``key`` (a user or session id): deterministic, proportional to the weights."""
        h = int.from_bytes(hashlib.sha256(f"{self.name}\x00{key}".encode()).digest()[:8], "big") / 2**64
        total = sum(self.variants.values())
        acc = 0.0
        for name, w in self.variants.items():
            acc += w / total
            if h < acc:
                return name
        return next(reversed(list(self.variants)))


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson interval for a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    d = 1 + Z95**2 / n
    c = (p + Z95**2 / (2 * n)) / d
    h = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _two_prop_p(s1: int, n1: int, s2: int, n2: int) -> float:
    if min(n1, n2) == 0:
        return 1.0
    p = (s1 + s2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (s1 / n1 - s2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def _welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) < 2 or len(b) < 2:
        return 1.0
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    z = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    return math.erfc(abs(z) / math.sqrt(2))


def _mean_ci(xs: Sequence[float]) -> tuple[float, float, float]:
    if not xs:
        return (0.0, 0.0, 0.0)
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return (m, m, m)
    h = Z95 * statistics.stdev(xs) / math.sqrt(len(xs))
    return (m, m - h, m + h)


def experiment_report(rows: Sequence[Mapping[str, Any]], variants: Sequence[str] | None = None, *, alpha: float = 0.05) -> dict[str, Any]:
    """Pure: per-variant metrics and the verdict. ``rows`` have variant, cost_usd, latency_s, error,
    and optionally correct (0/1) and score."""
    seen = sorted(dict.fromkeys(r["variant"] for r in rows))
    if "control" in seen:  # the baseline is "control" when there is one, else the first name
        seen.remove("control")
        seen.insert(0, "control")
    names = list(variants or seen)
    if len(names) < 2:
        raise ConfigError("an experiment report needs outcomes for at least two variants")
    per: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, list[float]]] = {}
    for v in names:
        rs = [r for r in rows if r["variant"] == v]
        correct = [float(r["correct"]) for r in rs if r.get("correct") is not None]
        scores = [float(r["score"]) for r in rs if r.get("score") is not None]
        cost = [float(r.get("cost_usd") or 0.0) for r in rs]
        lat = [float(r.get("latency_s") or 0.0) for r in rs]
        errs = sum(bool(r.get("error")) for r in rs)
        raw[v] = {"correct": correct, "score": scores, "cost": cost, "latency": lat}
        acc = sum(correct) / len(correct) if correct else None
        per[v] = {
            "n": len(rs),
            "accuracy": acc, "accuracy_ci": wilson(int(sum(correct)), len(correct)) if correct else None,
            "error_rate": errs / len(rs) if rs else 0.0, "errors": errs,
            "cost_usd_mean": _mean_ci(cost), "latency_p50_s": statistics.median(lat) if lat else 0.0,
            "latency_p95_s": sorted(lat)[max(0, math.ceil(0.95 * len(lat)) - 1)] if lat else 0.0,
            "score_mean": _mean_ci(scores) if scores else None,
        }
    base = names[0]
    comparisons = {}
    verdict_parts = []
    for v in names[1:]:
        b, c = raw[base], raw[v]
        cmp: dict[str, Any] = {}
        if b["correct"] and c["correct"]:
            cmp["accuracy_p"] = _two_prop_p(int(sum(c["correct"])), len(c["correct"]), int(sum(b["correct"])), len(b["correct"]))
        cmp["error_p"] = _two_prop_p(per[v]["errors"], per[v]["n"], per[base]["errors"], per[base]["n"])
        cmp["cost_p"] = _welch_p(c["cost"], b["cost"])
        cmp["latency_p"] = _welch_p(c["latency"], b["latency"])
        if b["score"] and c["score"]:
            cmp["score_p"] = _welch_p(c["score"], b["score"])
        comparisons[v] = cmp
        key, p = ("accuracy", cmp.get("accuracy_p")) if "accuracy_p" in cmp else ("score", cmp.get("score_p"))
        if p is None:
            verdict_parts.append(f"{v} vs {base}: no accuracy labels or scores to compare")
        elif p < alpha:
            better = v if (per[v]["accuracy"] if key == "accuracy" else per[v]["score_mean"][0]) > \
                (per[base]["accuracy"] if key == "accuracy" else per[base]["score_mean"][0]) else base
            verdict_parts.append(f"{better} is better on {key} (p = {p:.3g})")
        else:
            verdict_parts.append(f"{v} vs {base}: not yet significant on {key} (p = {p:.2f})")
    return {"variants": per, "baseline": base, "comparisons": comparisons, "verdict": "; ".join(verdict_parts)}
