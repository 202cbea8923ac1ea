"""CascadeRouter: cheap deterministic routing for clear cases, the LLM only for ambiguous ones.

Stages run in order (rules -> semantic -> LLM by default); the first stage whose own choice clears
that stage's confidence threshold decides, and the Decision names the stage. When no stage is sure,
the cascade escalates (if some stage had a candidate and an escalation route exists) or falls back.
Batches go stage by stage, so a semantic stage embeds all of its inputs in one call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError
from .base import Decision, Recorded, RouteInput, Router, unrecorded, unrecorded_many

__all__ = ["CascadeRouter", "Stage"]


@dataclass(frozen=True, slots=True)
class Stage:
    router: Router
    threshold: float = 0.5  # the least confidence at which this stage's choice is accepted
    name: str = ""
    # > 0: this stage chooses only among the top ``shortlist`` routes of the last earlier stage that
    # scored them (an LLM that reads a few routes' examples instead of all of them); its router
    # must take ``among=`` (LLMRouter does)
    shortlist: int = 0

    @property
    def label(self) -> str:
        return self.name or getattr(self.router, "name", self.router.kind)


class CascadeRouter(Recorded):
    kind = "cascade"

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        fallback: str | None = None,
        escalation: str | None = None,
        name: str = "cascade",
    ) -> None:
        if not stages:
            raise ConfigError(f"CascadeRouter {name!r} needs at least one stage")
        names: list[str] = []
        self.routes: dict[str, Any] = {}
        for st in stages:
            for n in st.router.route_names:
                if n not in names:
                    names.append(n)
            self.routes.update({k: v for k, v in getattr(st.router, "routes", {}).items() if k not in self.routes})
        for label, r in (("fallback", fallback), ("escalation", escalation)):
            if r is not None and r not in names:
                raise ConfigError(f"CascadeRouter {name!r}: {label} route {r!r} is not a route of any stage")
        for st in stages:
            if st.shortlist < 0 or (st.shortlist and not hasattr(st.router, "shortlist")):
                raise ConfigError(f"CascadeRouter {name!r}: stage {st.label!r} cannot take a shortlist "
                                  "(shortlist must be >= 0, on a router that chooses among given routes: llm)")
        self.stages = list(stages)
        self.fallback, self.escalation = fallback, escalation
        self.escalate_below = 0.0
        self.name = name
        self._names = names

    @property
    def route_names(self) -> list[str]:
        return list(self._names)

    def _accept(self, st: Stage, d: Decision) -> bool:
        return d.chosen is not None and d.confidence >= st.threshold

    def _combine(self, trail: list[tuple[Stage, Decision]], t0: float) -> Decision:
        parts = [f"{st.label}: {d.chosen or 'abstain'} {d.confidence:.2f}" for st, d in trail]
        cost = sum(d.cost_usd for _, d in trail)
        st, d = trail[-1]
        if self._accept(st, d):
            reason = " -> ".join(parts) + f" (>= {st.threshold:.2f}) | {d.reason}"
            return Decision(d.chosen, d.confidence, d.scores, "cascade", reason, time.perf_counter() - t0, "matched",
                            d.chosen, st.label, cost)
        # nobody was sure: keep the most confident candidate as `chosen`, for the record
        cands = [(dd.confidence, stt, dd) for stt, dd in trail if dd.chosen is not None]
        best = max(cands, key=lambda c: c[0]) if cands else None
        chosen, conf = (best[2].chosen, best[0]) if best else (None, 0.0)
        scores, stage = (best[2].scores, best[1].label) if best else ({}, None)
        reason = " -> ".join(parts) + "; no stage was sure"
        if best is not None and self.escalation is not None:
            route, outcome, reason = self.escalation, "escalated", reason + ": escalated"
        elif self.fallback is not None:
            route, outcome, reason = self.fallback, "fallback", reason + ": fallback"
        else:
            route, outcome = None, "abstained"
        return Decision(route, conf, scores, "cascade", reason, time.perf_counter() - t0, outcome, chosen, stage, cost)  # type: ignore[arg-type]

    @staticmethod
    def _among(st: Stage, trail: list[tuple[Stage, Decision]]) -> tuple[str, ...] | None:
        """A shortlisting stage's candidates: the best-scored routes of the last stage that scored
        more than one (None — every route — when no earlier stage did)."""
        for _, d in reversed(trail):
            if len(d.scores) > 1:
                ranked = sorted(d.scores, key=d.scores.__getitem__, reverse=True)
                return st.router.shortlist(ranked, st.shortlist) or None  # type: ignore[attr-defined, no-any-return]
        return None

    async def _ask(self, st: Stage, xs: Sequence[RouteInput], trails: Sequence[list[tuple[Stage, Decision]]]) -> list[Decision]:
        if not st.shortlist:
            return await unrecorded_many(st.router, xs)
        return await st.router.decisions(xs, among=[self._among(st, tr) for tr in trails])  # type: ignore[attr-defined, no-any-return]

    async def decision(self, x: RouteInput) -> Decision:
        t0 = time.perf_counter()
        trail: list[tuple[Stage, Decision]] = []
        for st in self.stages:  # the stages' own decisions are in the cascade's reason, not recorded apart
            if st.shortlist:
                d = await st.router.decision(x, self._among(st, trail))  # type: ignore[attr-defined]
            else:
                d = await unrecorded(st.router, x)
            trail.append((st, d))
            if self._accept(st, d):
                break
        return self._combine(trail, t0)

    async def decisions(self, xs: Sequence[RouteInput]) -> list[Decision]:
        t0 = time.perf_counter()
        trails: list[list[tuple[Stage, Decision]]] = [[] for _ in xs]
        pending = list(range(len(xs)))
        for st in self.stages:
            if not pending:
                break
            ds = await self._ask(st, [xs[i] for i in pending], [trails[i] for i in pending])
            still = []
            for i, d in zip(pending, ds, strict=True):
                trails[i].append((st, d))
                if not self._accept(st, d):
                    still.append(i)
            pending = still
        # an input's latency is what its stages spent on it (a batched stage reports its per-item share)
        return [self._combine(tr, t0)._replace(latency_s=sum(d.latency_s for _, d in tr)) for tr in trails]
