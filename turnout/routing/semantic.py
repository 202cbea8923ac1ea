"""SemanticRouter: example utterances per route, embedded once (cached by content hash), scored by
cosine similarity to each route's centroid, to its nearest example, or a blend ("hybrid").

Confidence is a temperature softmax over the route scores (the temperature is fitted by ``fit``),
so it is comparable across routers in a cascade. A route's threshold is the least best-score at
which it is accepted; below it the router abstains (and the caller's fallback applies).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._errors import ConfigError
from ..models.base import Embedder
from .base import Decision, Recorded, Route, RouteInput, check_policy_routes, check_routes, finalize, input_text

__all__ = ["EmbeddingCache", "FitReport", "SemanticRouter"]

Scoring = Literal["centroid", "nearest", "hybrid"]
SCORINGS: tuple[Scoring, ...] = ("centroid", "nearest", "hybrid")


class EmbeddingCache:
    """Vectors by a hash of (embedder name, text): utterances are embedded once, whatever re-reads them."""

    def __init__(self) -> None:
        self._vecs: dict[str, np.ndarray] = {}

    @staticmethod
    def key(embedder: str, text: str) -> str:
        return hashlib.sha256(f"{embedder}\x00{text}".encode()).hexdigest()

    async def get_many(self, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        keys = [self.key(embedder.name, t) for t in texts]
        missing = sorted({i for i, k in enumerate(keys) if k not in self._vecs}, key=lambda i: i)
        if missing:
            todo = list(dict.fromkeys(texts[i] for i in missing))
            vecs = await embedder.embed(todo)
            for t, v in zip(todo, vecs, strict=True):
                self._vecs[self.key(embedder.name, t)] = np.asarray(v, dtype=np.float32)
        if not texts:
            return np.zeros((0, embedder.dim), dtype=np.float32)
        return np.stack([self._vecs[k] for k in keys])

    def __len__(self) -> int:
        return len(self._vecs)


@dataclass(frozen=True, slots=True)
class FitReport:
    before: dict[str, float]
    after: dict[str, float]
    scoring: str
    temperature: float
    thresholds: dict[str, float]
    objective: str
    notes: list[str] = field(default_factory=list)


def _softmax_conf(scores: np.ndarray, best: int, temperature: float) -> float:
    z = (scores - scores[best]) / max(temperature, 1e-6)
    return float(1.0 / np.exp(z).sum())


class SemanticRouter(Recorded):
    kind = "semantic"

    def __init__(
        self,
        routes: Sequence[Route],
        embedder: Embedder,
        *,
        scoring: Scoring = "centroid",
        hybrid_weight: float = 0.5,
        temperature: float = 0.05,
        default_threshold: float = 0.0,
        fallback: str | None = None,
        escalation: str | None = None,
        escalate_below: float = 0.0,
        name: str = "semantic",
        cache: EmbeddingCache | None = None,
    ) -> None:
        who = f"SemanticRouter {name!r}"
        self.routes = check_routes(routes, who=who)
        check_policy_routes(list(self.routes), fallback, escalation, who=who)
        if scoring not in SCORINGS:
            raise ConfigError(f"{who}: scoring must be one of {', '.join(SCORINGS)}, not {scoring!r}")
        # routes with examples (or a description) are scored; the fallback/escalation routes may have none
        self.scored: list[Route] = []
        for r in routes:
            if r.utterances or (r.description and r.name != escalation):
                self.scored.append(r)  # the escalation route is the router's to pick, unless given examples
            elif r.name not in (fallback, escalation):
                raise ConfigError(f"{who}: route {r.name!r} has no utterances (and no description) to compare against")
        if not self.scored:
            raise ConfigError(f"{who}: no route has utterances")
        self.embedder = embedder
        self.scoring: Scoring = scoring
        self.hybrid_weight = hybrid_weight
        self.temperature = temperature
        self.thresholds = {r.name: (r.threshold if r.threshold is not None else default_threshold) for r in self.scored}
        self.fallback, self.escalation, self.escalate_below = fallback, escalation, escalate_below
        self.name = name
        self.cache = cache if cache is not None else EmbeddingCache()  # (an empty cache is falsy)
        self._ready = False
        self._names = [r.name for r in self.scored]

    @property
    def route_names(self) -> list[str]:
        return list(self.routes)

    @property
    def scored_names(self) -> list[str]:
        """The routes scored against examples (those a labelled example can teach)."""
        return list(self._names)

    def add_examples(self, examples: Sequence[tuple[str, str]]) -> int:
        """Add labelled inputs as example utterances of their routes (new texts only); the index is
        rebuilt on the next decision. Returns how many were added."""
        from dataclasses import replace

        new: dict[str, list[str]] = {}
        for text, route in examples:
            if route not in self._names:
                raise ConfigError(f"SemanticRouter {self.name!r}: {route!r} is not a scored route ({', '.join(self._names)})")
            new.setdefault(route, []).append(text)
        n = 0
        for i, r in enumerate(self.scored):
            have = set(r.utterances)
            add = tuple(dict.fromkeys(t for t in new.get(r.name, []) if t not in have))
            if add:
                self.scored[i] = self.routes[r.name] = replace(r, utterances=(*(r.utterances or ()), *add))
                n += len(add)
        if n:
            self._ready = False
        return n

    # -- index ---------------------------------------------------------------------------------
    async def prepare(self, *, warm: bool = False) -> None:
        """Embed the utterances (once; the cache keeps them) and build the score matrices.
        ``warm=True`` also runs one query through the encoder, so the first decision is not slow."""
        if warm:
            await self.embedder.embed(["warm up"])
        if self._ready:
            return
        texts: list[str] = []
        owner: list[int] = []
        for i, r in enumerate(self.scored):
            ex = r.utterances or (r.description,)
            texts.extend(ex)
            owner.extend([i] * len(ex))
        vecs = await self.cache.get_many(self.embedder, texts)
        order = np.argsort(np.asarray(owner), kind="stable")
        self._examples = np.ascontiguousarray(vecs[order])  # grouped by route
        counts = np.bincount(np.asarray(owner), minlength=len(self.scored))
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        cents = np.stack([self._examples[s : s + c].mean(axis=0) for s, c in zip(self._starts, counts, strict=True)])
        cents /= np.clip(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12, None)
        self._centroids = np.ascontiguousarray(cents.astype(np.float32))
        self._ready = True

    def _threshold_array(self) -> np.ndarray:
        return np.asarray([self.thresholds[n] for n in self._names], dtype=np.float32)

    def score_matrix(self, q: np.ndarray, scoring: Scoring | None = None) -> np.ndarray:
        """Route scores for query vectors ``q`` (n × dim) -> (n × routes)."""
        scoring = scoring or self.scoring
        if scoring == "centroid":
            return q @ self._centroids.T
        nearest = np.maximum.reduceat(q @ self._examples.T, self._starts, axis=1)
        if scoring == "nearest":
            return nearest
        w = self.hybrid_weight
        return w * (q @ self._centroids.T) + (1 - w) * nearest

    def _decide_row(self, scores: np.ndarray, t0: float, note: str = "") -> Decision:
        # plain floats from here on: for a handful of routes, numpy's per-call cost dominates
        vals = scores.tolist()
        best = max(range(len(vals)), key=vals.__getitem__)
        name = self._names[best]
        s = vals[best]
        T = max(self.temperature, 1e-6)
        conf = 1.0 / sum(math.exp((v - s) / T) for v in vals)
        score_map = dict(zip(self._names, (round(v, 4) for v in vals), strict=True))
        thr = self.thresholds[name]
        if s >= thr and conf >= self.escalate_below:  # the common case, built directly
            return Decision(name, conf, score_map, "semantic", f"{name} {s:.3f} ({self.scoring}){note}",
                            time.perf_counter() - t0, "matched", name, self.name)
        if s < thr:
            raw = Decision(None, conf, score_map, "semantic", f"best {name} {s:.3f} < threshold {thr:.3f}{note}",
                           0.0, "abstained", None, self.name)
        else:
            raw = Decision(name, conf, score_map, "semantic", f"{name} {s:.3f} ({self.scoring}){note}", 0.0, "matched", name, self.name)
        return finalize(raw, fallback=self.fallback, escalation=self.escalation, escalate_below=self.escalate_below, t0=t0)

    def _empty(self, t0: float) -> Decision:
        raw = Decision(None, 0.0, {}, "semantic", "empty input", 0.0, "abstained", None, self.name)
        return finalize(raw, fallback=self.fallback, escalation=None, escalate_below=0.0, t0=t0)

    def _note(self, text: str) -> str:
        trunc = getattr(self.embedder, "truncated", None)
        if trunc is not None and len(text) > 800 and trunc(text):
            return "; input truncated to the encoder's limit"
        return ""

    async def decision(self, x: RouteInput) -> Decision:
        t0 = time.perf_counter()
        await self.prepare()
        text = input_text(x)
        if not text.strip():
            return self._empty(t0)
        q = await self.embedder.embed([text])
        return self._decide_row(self.score_matrix(q)[0], t0, self._note(text))

    async def decisions(self, xs: Sequence[RouteInput]) -> list[Decision]:
        """Route many inputs with one embedding call. Latency is the batch's time per item."""
        t0 = time.perf_counter()
        await self.prepare()
        texts = [input_text(x) for x in xs]
        idx = [i for i, t in enumerate(texts) if t.strip()]
        out: list[Decision | None] = [None] * len(xs)
        if idx:
            q = await self.embedder.embed([texts[i] for i in idx])
            scores = self.score_matrix(q)
            per = (time.perf_counter() - t0) / len(xs)
            for row, i in enumerate(idx):
                d = self._decide_row(scores[row], time.perf_counter(), self._note(texts[i]))
                out[i] = d._replace(latency_s=per + d.latency_s)
        for i, d in enumerate(out):
            if d is None:
                out[i] = self._empty(time.perf_counter())
        return out  # type: ignore[return-value]

    # -- fitting -------------------------------------------------------------------------------
    def _final_accuracy(self, scores: np.ndarray, labels: list[str | None], thr: np.ndarray) -> tuple[float, float]:
        best = scores.argmax(axis=1)
        best_s = scores[np.arange(len(best)), best]
        ok = 0
        abstain = 0
        for b, s, y in zip(best, best_s, labels, strict=True):
            if s < thr[b]:
                abstain += 1
                final = self.fallback
            else:
                final = self._names[b]
            ok += final == y
        n = max(1, len(labels))
        return ok / n, abstain / n

    async def fit(
        self,
        examples: Sequence[tuple[RouteInput, str | None]],
        *,
        objective: Literal["accuracy", "precision"] = "accuracy",
        target_precision: float = 0.9,
        scorings: Sequence[Scoring] = SCORINGS,
    ) -> FitReport:
        """Calibrate scoring, thresholds and temperature on labelled examples, in place.

        ``objective="accuracy"`` picks each route's threshold to maximise end-to-end accuracy (with
        the fallback applied to abstentions); ``"precision"`` picks the least threshold at which each
        route reaches ``target_precision``. Labels outside the route set are an error.
        """
        if not examples:
            raise ConfigError("fit() needs labelled examples")
        names = set(self.routes)
        for _, y in examples:
            if y is not None and y not in names:
                raise ConfigError(f"fit(): label {y!r} is not a route of {self.name!r} ({', '.join(sorted(names))})")
        await self.prepare()
        labels = [y for _, y in examples]
        q = await self.cache.get_many(self.embedder, [input_text(x) or " " for x, _ in examples])
        before_acc, before_abs = self._final_accuracy(self.score_matrix(q), labels, self._threshold_array())
        before = {"accuracy": round(before_acc, 4), "abstain_rate": round(before_abs, 4)}
        notes: list[str] = []

        self.scoring = self._best_scoring(q, labels, scorings, notes)  # 1. scoring: best accuracy with no thresholds
        scores = self.score_matrix(q)
        self.thresholds.update(self._fit_thresholds(scores, labels, objective, target_precision))  # 2. thresholds
        self.temperature = self._fit_temperature(scores, labels)  # 3. temperature
        after_acc, after_abs = self._final_accuracy(scores, labels, self._threshold_array())
        after = {"accuracy": round(after_acc, 4), "abstain_rate": round(after_abs, 4)}
        return FitReport(before, after, self.scoring, self.temperature, dict(self.thresholds), objective, notes)

    def _best_scoring(self, q: Any, labels: list[str | None], scorings: Sequence[Scoring], notes: list[str]) -> Scoring:
        zero = np.full(len(self._names), -np.inf, dtype=np.float32)
        best_scoring, best_acc = self.scoring, -1.0
        for sc in scorings:
            acc, _ = self._final_accuracy(self.score_matrix(q, sc), labels, zero)
            notes.append(f"{sc}: accuracy {acc:.3f} without thresholds")
            if acc > best_acc + 1e-9:
                best_scoring, best_acc = sc, acc
        return best_scoring

    def _fit_thresholds(self, scores: Any, labels: list[str | None], objective: str, target_precision: float) -> dict[str, float]:
        """Route by route (a threshold only affects rows whose best route it is): the threshold with
        the best end-to-end accuracy, or the least one reaching ``target_precision``."""
        best = scores.argmax(axis=1)
        best_s = scores[np.arange(len(best)), best]
        new_thr: dict[str, float] = {}
        for i, name in enumerate(self._names):
            rows = sorted((float(s), y) for b, s, y in zip(best, best_s, labels, strict=True) if b == i)
            if not rows:
                new_thr[name] = self.thresholds[name]
                continue
            best_t, best_v = -1.0, -math.inf
            for t in [-1.0] + [s + 1e-6 for s, _ in rows]:
                kept = [(s, y) for s, y in rows if s >= t]
                if objective == "accuracy":
                    v = sum(y == name for _, y in kept) + sum(y == self.fallback for s, y in rows if s < t)
                else:
                    prec = sum(y == name for _, y in kept) / len(kept) if kept else 1.0
                    v = 0 if prec < target_precision else 1e6 - t  # least threshold reaching the target
                if v > best_v + 1e-9:
                    best_t, best_v = t, v
            new_thr[name] = round(max(best_t, -1.0), 6)
        return new_thr

    def _fit_temperature(self, scores: Any, labels: list[str | None]) -> float:
        """The least negative log-likelihood of the true route among the scored routes."""
        idx = {n: i for i, n in enumerate(self._names)}
        rows_t = [(scores[k], idx[y]) for k, y in enumerate(labels) if y in idx]
        best_T, best_nll = self.temperature, math.inf
        for T in (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5) if rows_t else ():
            nll = 0.0
            for s, y in rows_t:
                z = (s - s.max()) / T
                nll -= float(z[y] - np.log(np.exp(z).sum()))
            if nll < best_nll:
                best_T, best_nll = T, nll
        return best_T

    def settings(self) -> dict[str, Any]:
        """The fitted knobs, for saving beside the routes."""
        return {"scoring": self.scoring, "hybrid_weight": self.hybrid_weight, "temperature": self.temperature,
                "thresholds": dict(self.thresholds)}
