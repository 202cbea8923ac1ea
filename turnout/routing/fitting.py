"""Honest fitting for the semantic router: every choice is made on held-out scores.

A row that is one of the router's own examples would match itself (a score of 1.0), so the
training rows say nothing about how a configuration generalises. Here each row is scored by the
router *without* that row among its examples: exactly (leave-one-out) for the similarity scorers —
a centroid minus the row, the nearest example but the row — and by k-fold refits for the linear
probe. Rows that are not examples are scored by the whole index, as new traffic would be.

On those held-out scores:

1. **scoring** — the candidates (the router's current configuration first, then centroid, centroid
   with the route description, hybrids, nearest, the probe) are ranked by held-out accuracy, and
   the first (simplest) within one standard error of the best is kept: the one-standard-error rule,
   so a configuration is only replaced by one that is better beyond noise, and the result is never
   below the current configuration's held-out score;
2. **temperature** — the least held-out negative log-likelihood, so confidence is calibrated;
3. **abstention** — with ``target_precision``, the least confidence cut at which the held-out
   answers are right that often (no fallback-labelled rows needed), with the share of rows it
   would abstain on; with fallback- or null-labelled rows, per-route score thresholds as well;
4. **shortlist** — with ``target_precision`` too, how many of its best routes a later cascade stage
   (an LLM choosing among them) must be shown so that the right one is among them for that share
   of the rows under the cut (``shortlist_size``): that stage cannot be right more often.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .semantic import SemanticRouter

__all__ = ["Candidate", "FitReport", "HeldOut", "fit_semantic", "precision_cut", "shortlist_size", "train_probe"]

PROBE_SCALE = 20.0  # cosine similarities are small; the probe sees them scaled (a temperature of 0.05)
PROBE_FOLDS = 8
TEMPERATURES = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5)


@dataclass(frozen=True, slots=True)
class Candidate:
    scoring: str
    hybrid_weight: float = 0.5
    description_weight: float = 0.0
    probe_l2: float = 0.01

    @property
    def label(self) -> str:
        if self.scoring == "hybrid":
            return f"hybrid {self.hybrid_weight:g}"
        if self.scoring == "probe":
            return f"probe l2={self.probe_l2:g}"
        if self.scoring == "centroid" and self.description_weight:
            return f"centroid + description {self.description_weight:g}"
        return self.scoring

    def settings(self) -> dict[str, Any]:
        return {"scoring": self.scoring, "hybrid_weight": self.hybrid_weight,
                "description_weight": self.description_weight, "probe_l2": self.probe_l2}


@dataclass(frozen=True, slots=True)
class FitReport:
    """What ``fit`` chose and why. ``before``/``after``: the whole decision's held-out ``accuracy`` and
    ``abstain_rate`` (thresholds, cut and fallback applied), and the scorer's top-1 accuracy held out
    (``cv_accuracy``) beside the optimistic one on the training rows (``train_accuracy``: there each
    example matches itself)."""

    before: dict[str, float]
    after: dict[str, float]
    scoring: str
    temperature: float
    thresholds: dict[str, float]
    objective: str
    notes: list[str] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    validation: str = ""  # how rows were held out
    confidence_cut: float | None = None  # answer only at or above this confidence (target_precision)
    expected_precision: float | None = None  # held out, at the cut
    expected_abstain_rate: float | None = None  # held out, at the cut
    # with target_precision: {"k", "coverage", "rows", "scope"} — a later stage's shortlist (``shortlist_size``)
    shortlist: dict[str, Any] | None = None


def train_probe(x: np.ndarray, y: np.ndarray, k: int, *, l2: float = 0.01, iters: int = 200, step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on (scaled) embeddings by full-batch gradient descent from
    zero: deterministic, so ``prepare`` retrains the same probe from the examples every time.
    Returns (W, b) such that the route scores are ``q @ W + b`` (in cosine units)."""
    xs = x.astype(np.float64) * PROBE_SCALE
    n, d = xs.shape
    w = np.zeros((d, k))
    b = np.zeros(k)
    onehot = np.eye(k)[y]
    for _ in range(iters):
        z = xs @ w + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = p - onehot
        w -= step * (xs.T @ g / n + l2 * w)
        b -= step * g.mean(axis=0)
    return w.astype(np.float32), (b / PROBE_SCALE).astype(np.float32)  # logits / scale = q @ w + b / scale


def _normalise(m: np.ndarray) -> np.ndarray:
    return m / np.clip(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12, None)


class HeldOut:
    """The router's example index, and the scores of labelled rows with each row's own examples
    left out."""

    def __init__(self, router: SemanticRouter, q: np.ndarray, texts: Sequence[str], desc: np.ndarray) -> None:
        self.r, self.q, self.desc = router, q, desc
        self.e = router._examples
        self.starts = router._starts
        self.counts = np.diff(np.append(self.starts, len(self.e)))
        self.owner = np.repeat(np.arange(len(self.starts)), self.counts)
        where: dict[str, list[int]] = {}
        for j, t in enumerate(router._example_texts):
            where.setdefault(t, []).append(j)
        self.self_ex = [np.asarray(where.get(t, ()), dtype=np.int64) for t in texts]
        self.sums = np.add.reduceat(self.e.astype(np.float64), self.starts, axis=0)

    def _centroid(self, wd: float, heldout: bool) -> np.ndarray:
        base = _normalise(self.sums / self.counts[:, None] + wd * self.desc)
        s = self.q @ base.T.astype(np.float32)
        if not heldout:
            return s
        for i, js in enumerate(self.self_ex):
            for route in set(self.owner[js].tolist()):
                mine = js[self.owner[js] == route]
                left = self.counts[route] - len(mine)
                v = (self.sums[route] - self.e[mine].sum(axis=0)) / max(left, 1) + wd * self.desc[route]
                nv = float(np.linalg.norm(v))
                s[i, route] = float(self.q[i] @ v) / nv if left > 0 and nv > 1e-9 else -1.0
        return s

    def _nearest(self, heldout: bool) -> np.ndarray:
        sims = self.q @ self.e.T
        if heldout:
            for i, js in enumerate(self.self_ex):
                sims[i, js] = -np.inf
        near = np.maximum.reduceat(sims, self.starts, axis=1)
        return np.where(np.isfinite(near), near, -1.0).astype(np.float32)

    def _probe(self, c: Candidate, heldout: bool) -> np.ndarray:
        k = len(self.starts)
        if not heldout or not any(len(js) for js in self.self_ex):
            w, b = train_probe(self.e, self.owner, k, l2=c.probe_l2)
            return self.q @ w + b
        out = np.empty((len(self.q), k), dtype=np.float32)
        order = list(range(len(self.q)))
        random.Random(0).shuffle(order)
        for f in range(PROBE_FOLDS):
            rows = np.asarray(order[f::PROBE_FOLDS], dtype=np.int64)
            if not len(rows):
                continue
            drop = np.zeros(len(self.e), dtype=bool)
            for i in rows:
                drop[self.self_ex[i]] = True
            keep = ~drop
            w, b = train_probe(self.e[keep], self.owner[keep], k, l2=c.probe_l2)
            out[rows] = self.q[rows] @ w + b
        return out

    def scores(self, c: Candidate, *, heldout: bool = True) -> np.ndarray:
        if c.scoring == "centroid":
            return self._centroid(c.description_weight, heldout)
        if c.scoring == "nearest":
            return self._nearest(heldout)
        if c.scoring == "probe":
            return self._probe(c, heldout)
        w = c.hybrid_weight
        return w * self._centroid(c.description_weight, heldout) + (1 - w) * self._nearest(heldout)


def _accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    ok = y >= 0
    return float((scores[ok].argmax(axis=1) == y[ok]).mean()) if ok.any() else 0.0


def _conf(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = (scores - scores.max(axis=1, keepdims=True)) / max(temperature, 1e-6)
    return 1.0 / np.exp(z).sum(axis=1)


def fit_temperature(scores: np.ndarray, y: np.ndarray, default: float) -> float:
    """The temperature with the least negative log-likelihood of the true route (held-out scores)."""
    ok = y >= 0
    if not ok.any():
        return default
    s, t = scores[ok].astype(np.float64), y[ok]
    best_t, best = default, math.inf
    for temp in TEMPERATURES:
        z = (s - s.max(axis=1, keepdims=True)) / temp
        nll = float(-(z[np.arange(len(t)), t] - np.log(np.exp(z).sum(axis=1))).sum())
        if nll < best - 1e-9:
            best_t, best = temp, nll
    return best_t


def precision_cut(held: Sequence[tuple[float, bool]], target: float, *, ceiling: float = 1.0, min_support: int = 5) -> float:
    """The lowest confidence cut (not above ``ceiling``) at which the held-out answers at or above it
    are right at least ``target`` of the time (with at least ``min_support`` of them)."""
    best, right = ceiling, 0
    for n, (c, ok) in enumerate(sorted(held, reverse=True), 1):
        right += ok
        if n >= min_support and right / n >= target:
            best = min(best, c)
    return best


def shortlist_size(held: np.ndarray, y: np.ndarray, below: np.ndarray, target: float, *, min_rows: int = 20) -> dict[str, Any] | None:
    """The smallest ``k`` such that the right route is among the ``k`` best held-out scores for at
    least ``target`` of the rows a later stage will see — those under the confidence cut (``below``),
    or every labelled row when fewer than ``min_rows`` are. A stage that chooses among a shortlist is
    never right on a row whose route it was not shown, so its precision is bounded by this share.
    ``{"k", "coverage", "rows", "scope"}``; None without labelled rows."""
    labelled = y >= 0
    under = labelled & below
    enough = int(under.sum()) >= min_rows
    rows = under if enough else labelled
    n = int(rows.sum())
    if n == 0:
        return None
    right = held[rows, y[rows]]
    rank = (held[rows] > right[:, None]).sum(axis=1) + 1  # 1: the right route scored best
    k, cov = 1, 0.0
    for k in range(1, held.shape[1] + 1):
        cov = float((rank <= k).mean())
        if cov >= target:
            break
    return {"k": k, "coverage": round(cov, 4), "rows": n, "scope": "under the cut" if enough else "all labelled rows"}


def _route_thresholds(r: SemanticRouter, scores: np.ndarray, labels: list[str | None]) -> dict[str, float]:
    """Per-route score thresholds with the best held-out end-to-end accuracy (abstentions go to the
    fallback), for data with fallback- or null-labelled rows (what an abstention is right on)."""
    best = scores.argmax(axis=1)
    best_s = scores[np.arange(len(best)), best]
    out: dict[str, float] = {}
    for i, name in enumerate(r._names):
        rows = sorted((float(s), y) for b, s, y in zip(best, best_s, labels, strict=True) if b == i)
        best_t, best_v = -1.0, -math.inf
        for t in [-1.0] + [s + 1e-6 for s, _ in rows]:
            v = sum(y == name for s, y in rows if s >= t) + sum(y == r.fallback for s, y in rows if s < t)
            if v > best_v:
                best_t, best_v = t, v
        out[name] = round(best_t, 6)
    return out


def end_to_end(r: SemanticRouter, scores: np.ndarray, labels: list[str | None]) -> dict[str, float]:
    """Accuracy and abstain rate of the router's whole decision on these scores: its per-route
    thresholds, temperature and confidence cut applied, abstentions sent to the fallback."""
    best = scores.argmax(axis=1)
    best_s = scores[np.arange(len(best)), best]
    thr = np.asarray([r.thresholds[n] for n in r._names])[best]
    answered = (best_s >= thr) & (_conf(scores, r.temperature) >= r.escalate_below)
    routes = [r._names[b] if a else r.fallback for b, a in zip(best, answered, strict=True)]
    n = max(1, len(labels))
    return {"accuracy": round(sum(x == y for x, y in zip(routes, labels, strict=True)) / n, 4),
            "abstain_rate": round(1 - float(answered.mean()), 4) if len(labels) else 0.0}


def candidates(r: SemanticRouter) -> list[Candidate]:
    current = Candidate(r.scoring, r.hybrid_weight, r.description_weight, r.probe_l2)
    out = [current, Candidate("centroid")]
    if any(x.description and x.utterances for x in r.scored):
        out += [Candidate("centroid", description_weight=w) for w in (0.1, 0.2, 0.35)]
    out += [Candidate("hybrid", hybrid_weight=w) for w in (0.75, 0.5, 0.25)]
    out += [Candidate("nearest"), Candidate("probe")]
    return list(dict.fromkeys(out))


async def fit_semantic(r: SemanticRouter, texts: list[str], labels: list[str | None], *,
                       target_precision: float | None, objective: str) -> FitReport:
    await r.prepare()
    q = await r.cache.get_many(r.embedder, [t or " " for t in texts])
    desc = await r.description_vectors()
    idx = {n: i for i, n in enumerate(r._names)}
    y = np.asarray([idx.get(lab, -1) if lab is not None else -1 for lab in labels], dtype=np.int64)
    h = HeldOut(r, q, texts, desc)
    n_self = sum(bool(len(js)) for js in h.self_ex)
    validation = (f"leave-one-out ({n_self} of {len(texts)} rows are the router's own examples and are scored without "
                  f"themselves; the probe by {PROBE_FOLDS}-fold)" if n_self else "held out (no row is one of the router's examples)")
    rows: list[dict[str, Any]] = []
    for c in candidates(r):
        rows.append({"candidate": c, "label": c.label, "cv_accuracy": _accuracy(h.scores(c), y),
                     "train_accuracy": _accuracy(h.scores(c, heldout=False), y)})
    n_in = max(1, int((y >= 0).sum()))
    best = max(x["cv_accuracy"] for x in rows)
    se = math.sqrt(max(best * (1 - best), 1.0 / n_in) / n_in)
    chosen = next(x for x in rows if x["cv_accuracy"] >= best - se - 1e-12)  # the first (simplest) within 1 SE
    before = {**end_to_end(r, h.scores(rows[0]["candidate"]), labels),
              "train_accuracy": round(rows[0]["train_accuracy"], 4), "cv_accuracy": round(rows[0]["cv_accuracy"], 4)}
    notes = [f"{x['label']}: held out {x['cv_accuracy']:.3f}, on the training rows {x['train_accuracy']:.3f}" for x in rows]
    notes.append(f"kept the first candidate within one standard error ({se:.3f}) of the best held-out score {best:.3f}")

    c: Candidate = chosen["candidate"]
    r.configure(**c.settings())
    await r.prepare()
    held = h.scores(c)
    r.temperature = fit_temperature(held, y, r.temperature)
    report: dict[str, Any] = {}
    if any(lab is None or lab == r.fallback for lab in labels) and r.fallback is not None:
        r.thresholds.update(_route_thresholds(r, held, labels))
        notes.append("per-route score thresholds fitted on the held-out scores of the fallback-labelled rows")
    if target_precision is not None:
        conf = _conf(held, r.temperature)
        pred = held.argmax(axis=1)
        pairs = [(float(cf), bool(p == t)) for cf, p, t in zip(conf, pred, y, strict=True) if t >= 0]
        cut = precision_cut(pairs, target_precision)
        kept = [ok for cf, ok in pairs if cf >= cut]
        r.escalate_below = round(cut, 6)
        short = shortlist_size(held, y, conf < cut, target_precision)
        report = {"confidence_cut": r.escalate_below,
                  "expected_precision": round(sum(kept) / len(kept), 4) if kept else None,
                  "expected_abstain_rate": round(1 - len(kept) / max(1, len(pairs)), 4), "shortlist": short}
        if short is not None:
            notes.append(f"a later stage's shortlist: the best {short['k']} routes hold the right one for {short['coverage']:.3f} "
                         f"of {short['rows']} held-out rows ({short['scope']}; target {target_precision:g})")
    after = {**end_to_end(r, held, labels),
             "train_accuracy": round(chosen["train_accuracy"], 4), "cv_accuracy": round(chosen["cv_accuracy"], 4)}
    table = [{"candidate": x["label"], "cv_accuracy": round(x["cv_accuracy"], 4), "train_accuracy": round(x["train_accuracy"], 4),
              "chosen": x is chosen} for x in rows]
    return FitReport(before, after, c.label, r.temperature, dict(r.thresholds), objective, notes, table, validation, **report)
