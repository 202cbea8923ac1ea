"""SemanticRouter: example utterances per route, embedded once (cached by content hash), scored by
cosine similarity to each route's centroid (optionally blended with its description), to its
nearest example, a blend of the two ("hybrid"), or by a linear probe trained on the examples.

Confidence is a temperature softmax over the route scores (the temperature is fitted by ``fit`` on
held-out scores), so it is comparable across routers in a cascade. A route's threshold is the least
best-score at which it is accepted; below it the router abstains (and the caller's fallback
applies). ``fit`` chooses by cross-validation (``fitting.py``): it never scores a row on an index
that contains it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .._errors import ConfigError
from ..models.base import Embedder
from .base import Decision, Recorded, Route, RouteInput, check_policy_routes, check_routes, finalize, input_text
from .fitting import FitReport, fit_semantic, train_probe

__all__ = ["EmbeddingCache", "FitReport", "SemanticRouter"]

Scoring = Literal["centroid", "nearest", "hybrid", "probe"]
SCORINGS: tuple[Scoring, ...] = ("centroid", "nearest", "hybrid", "probe")


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
        description_weight: float = 0.0,
        probe_l2: float = 0.01,
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
        self.description_weight = description_weight
        self.probe_l2 = probe_l2
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
        self._example_texts = [texts[i] for i in order]
        counts = np.bincount(np.asarray(owner), minlength=len(self.scored))
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        cents = np.stack([self._examples[s : s + c].mean(axis=0) for s, c in zip(self._starts, counts, strict=True)])
        if self.description_weight:
            cents = cents + self.description_weight * await self.description_vectors()
        cents /= np.clip(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12, None)
        self._centroids = np.ascontiguousarray(cents.astype(np.float32))
        if self.scoring == "probe":  # deterministic: the same examples give the same probe
            self._probe_w, self._probe_b = train_probe(self._examples, np.asarray(owner)[order], len(self.scored), l2=self.probe_l2)
        self._ready = True

    async def description_vectors(self) -> np.ndarray:
        """Each scored route's description embedding (zeros where it has none, or where the
        description already is its only example)."""
        has = [i for i, r in enumerate(self.scored) if r.description and r.utterances]
        out = np.zeros((len(self.scored), self.embedder.dim), dtype=np.float32)
        if has:
            out[has] = await self.cache.get_many(self.embedder, [self.scored[i].description for i in has])
        return out

    def configure(self, **settings: Any) -> None:
        """Change scoring knobs (``scoring``, ``hybrid_weight``, ``description_weight``, ``probe_l2``,
        ``temperature``); the index is rebuilt on the next decision."""
        for k, v in settings.items():
            if k not in ("scoring", "hybrid_weight", "description_weight", "probe_l2", "temperature"):
                raise ConfigError(f"SemanticRouter {self.name!r}: unknown setting {k!r}")
            setattr(self, k, v)
        self._ready = False

    def _threshold_array(self) -> np.ndarray:
        return np.asarray([self.thresholds[n] for n in self._names], dtype=np.float32)

    def score_matrix(self, q: np.ndarray, scoring: Scoring | None = None) -> np.ndarray:
        """Route scores for query vectors ``q`` (n × dim) -> (n × routes)."""
        scoring = scoring or self.scoring
        if scoring == "probe":
            return q @ self._probe_w + self._probe_b
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
    async def fit(
        self,
        examples: Sequence[tuple[RouteInput, str | None]],
        *,
        objective: Literal["accuracy", "precision"] = "accuracy",
        target_precision: float = 0.9,
    ) -> FitReport:
        """Choose scoring and temperature by cross-validation on labelled rows, in place (see
        ``turnout.routing.fitting``): each row is scored without itself among the examples, and the
        current configuration is kept unless another is better beyond one standard error.

        ``objective="precision"`` also sets the confidence cut (``escalate_below``) at which the
        held-out answers reach ``target_precision`` — no fallback-labelled rows needed. Rows labelled
        with the fallback (or null) also fit per-route score thresholds. Labels outside the route set
        are an error.
        """
        if not examples:
            raise ConfigError("fit() needs labelled examples")
        if objective not in ("accuracy", "precision"):
            raise ConfigError(f"fit(): objective must be accuracy or precision, not {objective!r}")
        names = set(self.routes)
        for _, y in examples:
            if y is not None and y not in names:
                raise ConfigError(f"fit(): label {y!r} is not a route of {self.name!r} ({', '.join(sorted(names))})")
        return await fit_semantic(self, [input_text(x) for x, _ in examples], [y for _, y in examples],
                                  target_precision=target_precision if objective == "precision" else None, objective=objective)

    def settings(self) -> dict[str, Any]:
        """The fitted knobs, for saving beside the routes."""
        return {"scoring": self.scoring, "hybrid_weight": self.hybrid_weight, "description_weight": self.description_weight,
                "probe_l2": self.probe_l2, "temperature": self.temperature, "thresholds": dict(self.thresholds)}
