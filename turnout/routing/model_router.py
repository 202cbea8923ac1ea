"""Model routing: pick the model for a request by task category, complexity tier, data class and a
preference (cheapest that meets the tier, fastest, or best quality).

- The **complexity tier** comes from any router whose routes are tier names: ``ComplexityRules``
  (length, structure, code, numbers, keywords — no model, microseconds), a ``SemanticRouter``
  trained on labelled or logged rows (``difficulty_router(rows, embedder)``), an ``LLMRouter`` judge,
  or a cascade of them.
- The **category** (optional) comes from any router (summarise / translate / code / ...); a
  category can have its own models per tier.
- The candidates are the chosen tier's models in preference order, then every higher tier's (a
  request never moves *down* a tier), keeping only models the catalog allows for the request's data
  classes — so failover never crosses a compliance line. No allowed model → ``ComplianceError``.

``ModelRouter.decide`` returns a ``Decision`` (route = model, stage = tier, reason says why) and
logs it into the active run like every router. ``ModelRouter.as_model()`` is a ChatModel that
routes each request and fails over down the candidate list when a model is unavailable.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Literal

from .._errors import ComplianceError, ConfigError
from .._types import Completion, Price, Request, StreamChunk
from ..models.base import ChatModel, Embedder
from ..policies.fallback import Fallback, Health
from .base import Decision, Recorded, Route, RouteInput, check_routes, finalize, input_text, logged, unrecorded

__all__ = ["ComplexityRules", "ModelRouter", "difficulty_router"]

Preference = Literal["cheapest", "fastest", "quality"]

_HARD_WORDS = re.compile(
    r"\b(prove|derive|step[- ]by[- ]step|analy[sz]e|optimi[sz]e|trade-?offs?|compare|architecture|refactor|debug|"
    r"explain why|reason|algorithm|complexity|design|evaluate|critique|then|after that|each|total|remaining|percent|twice|"
    r"half|average)\b",
    re.I,
)


class ComplexityRules(Recorded):
    """A rule router over tier names (lowest first): scores a text 0..1 from its length, lines, code,
    numbers, questions and "hard" words, and maps the score to a tier by ``thresholds``.

    The score is the mean of capped features (each in 0..1): chars / ``long_chars``, code (a fence or
    a code-looking line), numbers / 6, hard words / 3, questions / 3, lines / 20. Confidence is how
    far the score sits from the nearest threshold (0.5 on a threshold, 1.0 far from it). Default
    thresholds are evenly spaced over (0, 0.5): 0.25 for two tiers."""

    kind = "complexity"
    fallback: str | None = None
    escalation: str | None = None
    escalate_below = 0.0

    def __init__(self, tiers: Sequence[str] = ("easy", "hard"), *, thresholds: Sequence[float] | None = None,
                 long_chars: int = 1200, hard_words: str | None = None, name: str = "complexity") -> None:
        if not tiers:
            raise ConfigError("ComplexityRules needs at least one tier")
        # default: evenly spaced over (0, 0.5) — few texts score above 0.5, since most features are 0 for plain prose
        th = list(thresholds) if thresholds is not None else [0.5 * i / len(tiers) for i in range(1, len(tiers))]
        if len(th) != len(tiers) - 1 or th != sorted(th) or any(not 0 < t < 1 for t in th):
            raise ConfigError(f"ComplexityRules: {len(tiers) - 1} increasing thresholds in (0, 1) for tiers {list(tiers)}, got {th}")
        self.tiers, self.thresholds, self.long_chars, self.name = list(tiers), th, long_chars, name
        self.routes = check_routes([Route(t) for t in tiers], who=f"ComplexityRules {name!r}")
        self._hard = re.compile(hard_words, re.I) if hard_words else _HARD_WORDS

    @property
    def route_names(self) -> list[str]:
        return list(self.tiers)

    def features(self, text: str) -> dict[str, float]:
        code = 1.0 if "```" in text or re.search(r"^\s*(def |class |import |function |SELECT |#include)", text, re.M) else 0.0
        return {
            "length": min(1.0, len(text) / self.long_chars),
            "code": code,
            "numbers": min(1.0, len(re.findall(r"\d+(?:\.\d+)?", text)) / 6),
            "hard_words": min(1.0, len(self._hard.findall(text)) / 3),
            "questions": min(1.0, text.count("?") / 3),
            "lines": min(1.0, text.count("\n") / 20),
        }

    def score(self, text: str) -> tuple[float, dict[str, float]]:
        f = self.features(text)
        return sum(f.values()) / len(f), f

    def _decide(self, x: RouteInput) -> Decision:
        t0 = time.perf_counter()
        s, f = self.score(input_text(x))
        i = sum(s >= t for t in self.thresholds)
        margin = min((abs(s - t) for t in self.thresholds), default=0.5)
        conf = min(1.0, 0.5 + margin * 2)
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(f.items(), key=lambda kv: -kv[1]) if v > 0)[:120]
        raw = Decision(self.tiers[i], conf, {t: (1.0 if j == i else 0.0) for j, t in enumerate(self.tiers)}, self.kind,
                       f"score {s:.2f} ({top or 'nothing'})", chosen=self.tiers[i])
        return finalize(raw, fallback=None, escalation=None, escalate_below=0.0, t0=t0)

    async def decision(self, x: RouteInput) -> Decision:
        return self._decide(x)


def difficulty_router(rows: Sequence[Mapping[str, Any]], embedder: Embedder, *, label: str = "tier", text: str = "text",
                      tiers: Sequence[str] | None = None, name: str = "difficulty", **kw: Any) -> Any:
    """An embedding difficulty classifier: a ``SemanticRouter`` whose routes are tiers, their examples
    the labelled (or logged and reviewed) rows ``{"text": ..., "tier": "hard"}``."""
    from .semantic import SemanticRouter

    by: dict[str, list[str]] = {}
    for n, r in enumerate(rows):
        if text not in r or label not in r:
            raise ConfigError(f"difficulty rows: row {n + 1} needs {text!r} and {label!r}")
        by.setdefault(str(r[label]), []).append(str(r[text]))
    order = list(tiers) if tiers is not None else sorted(by)
    missing = [t for t in order if t not in by]
    if missing:
        raise ConfigError(f"difficulty rows: no examples for tier(s) {missing}")
    return SemanticRouter([Route(t, utterances=tuple(by[t])) for t in order], embedder, scoring=kw.pop("scoring", "hybrid"),
                          name=name, **kw)


def _blended(p: Price) -> float:
    return p.input_per_m + p.output_per_m


class ModelRouter:
    """Chooses a model from ``catalog`` per request.

    ``tiers`` maps tier name -> model names, lowest tier first (default: the catalog's models grouped
    by their ``tier`` tag, tiers ordered by their cheapest model). ``complexity`` is a router whose
    routes are those tier names (default ``ComplexityRules(tiers)``). ``category`` is an optional
    router; ``categories`` maps a category to its own ``{tier: [models]}`` (tiers it leaves out use
    the defaults). ``prefer`` orders a tier's models: ``cheapest`` (blended price), ``fastest``
    (latency seen by this router, else the spec's ``latency_ms``), ``quality`` (the spec's
    ``quality`` score)."""

    kind = "model"
    fallback: str | None = None
    escalation: str | None = None
    escalate_below = 0.0

    def __init__(
        self,
        catalog: Any,
        *,
        tiers: Mapping[str, Sequence[str]] | None = None,
        complexity: Any = None,
        category: Any = None,
        categories: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        prefer: Preference = "cheapest",
        min_tier: str | None = None,
        cooldown: float = 30.0,
        resolve: Callable[[str], ChatModel] | None = None,
        name: str = "model-router",
    ) -> None:
        self.catalog, self.name, self.prefer, self.cooldown = catalog, name, prefer, cooldown
        self.resolve: Callable[[str], ChatModel] = resolve or catalog.model  # name -> the model to call (fakes in tests)
        if prefer not in ("cheapest", "fastest", "quality"):
            raise ConfigError(f"ModelRouter {name!r}: prefer must be cheapest, fastest or quality, not {prefer!r}")
        if tiers is None:
            tiers = tiers_by_price(catalog)
        self.tiers = {t: list(ms) for t, ms in tiers.items()}
        who = f"ModelRouter {name!r}"
        for t, ms in [*self.tiers.items(), *((f"{c}.{t}", ms) for c, tm in (categories or {}).items() for t, ms in tm.items())]:
            if not ms:
                raise ConfigError(f"{who}: tier {t!r} has no models")
            for m in ms:
                if m not in catalog:
                    raise ConfigError(f"{who}: tier {t!r}: unknown model {m!r} (catalog: {', '.join(catalog.names())})")
        for c, tm in (categories or {}).items():
            for t in tm:
                if t not in self.tiers:
                    raise ConfigError(f"{who}: category {c!r}: unknown tier {t!r} (tiers: {', '.join(self.tiers)})")
        self.order = list(self.tiers)
        self.complexity = complexity if complexity is not None else ComplexityRules(self.order)
        unknown = [r for r in getattr(self.complexity, "route_names", []) if r not in self.tiers]
        if unknown:
            raise ConfigError(f"{who}: the complexity router's routes {unknown} are not tiers ({', '.join(self.order)})")
        self.category, self.categories = category, {c: dict(tm) for c, tm in (categories or {}).items()}
        if min_tier is not None and min_tier not in self.tiers:
            raise ConfigError(f"{who}: min_tier {min_tier!r} is not a tier ({', '.join(self.order)})")
        self.min_tier = min_tier
        self.routes = {m: Route(m) for ms in self.tiers.values() for m in ms}
        self.health = Health(cooldown)  # cooldowns and latency of the candidates, shared by every request's failover

    @property
    def route_names(self) -> list[str]:
        return list(self.routes)

    # -- ranking ------------------------------------------------------------------------------------
    def _rank(self, models: Sequence[str]) -> list[str]:
        spec = self.catalog.spec
        if self.prefer == "cheapest":
            return sorted(models, key=lambda m: _blended(spec(m).price))
        if self.prefer == "fastest":
            def speed(m: str) -> float:
                if m in self.health.latency:
                    return self.health.latency[m]
                ms = spec(m).latency_ms
                return ms / 1000 if ms else float("inf")
            return sorted(models, key=lambda m: (speed(m), _blended(spec(m).price)))
        return sorted(models, key=lambda m: (-(spec(m).quality or 0.0), _blended(spec(m).price)))

    def _tier_models(self, tier: str, cat: str | None) -> list[str]:
        over = self.categories.get(cat or "", {})
        return list(over.get(tier, self.tiers[tier]))

    async def route(self, x: RouteInput) -> tuple[Decision, list[str]]:
        """The decision and the ordered candidate models (chosen tier first, then higher tiers)."""
        t0 = time.perf_counter()
        text = input_text(x)
        cat = None
        why = []
        if self.category is not None:  # the inner routers' decisions are part of this one, not recorded apart
            cd = await unrecorded(self.category, x)
            cat = cd.route
            why.append(f"category {cat or '(none)'} ({cd.confidence:.2f})")
        td = await unrecorded(self.complexity, x)
        tier = td.route if td.route in self.tiers else self.order[-1]  # an abstaining classifier: the top tier, to be safe
        if self.min_tier is not None and self.order.index(tier) < self.order.index(self.min_tier):
            tier = self.min_tier
        why.append(f"tier {tier} ({td.kind}: {td.reason.split(';')[0]})" if td.route else "tier unknown: top tier")
        classes = self.catalog.classes_of(text)
        cands: list[str] = []
        for t in self.order[self.order.index(tier):]:
            for m in self._rank(self._tier_models(t, cat)):
                if m not in cands:
                    cands.append(m)
        allowed = [m for m in cands if self.catalog.allowed(m, classes)]
        if classes:
            why.append(f"data classes {', '.join(sorted(classes))}: {len(allowed)} of {len(cands)} models allowed")
        if not allowed:
            raise ComplianceError(sorted(classes), cands, "no model of this tier or above may receive them")
        chosen = allowed[0]
        why.append(f"{self.prefer}: {chosen}")
        scores = {m: round(1.0 - i / max(1, len(allowed)), 4) for i, m in enumerate(allowed)}
        d = Decision(chosen, td.confidence, scores, self.kind, "; ".join(why), time.perf_counter() - t0, "matched", chosen, tier,
                     td.cost_usd)
        return logged(self, x, d), allowed

    async def decide(self, x: RouteInput) -> Decision:
        return (await self.route(x))[0]

    async def decide_many(self, xs: Sequence[RouteInput]) -> list[Decision]:
        return [await self.decide(x) for x in xs]

    def as_model(self) -> RoutedModel:
        return RoutedModel(self)


def tiers_by_price(catalog: Any) -> dict[str, list[str]]:
    """The catalog's models grouped by their ``tier``, cheapest tier first."""
    groups: dict[str, list[str]] = {}
    for s in catalog.specs():
        groups.setdefault(s.tier, []).append(s.name)
    return dict(sorted(groups.items(), key=lambda kv: min(_blended(catalog.spec(m).price) for m in kv[1])))


def build_model_router(cfg: Any, catalog: Any, *, name: str, resolve: Callable[[str], ChatModel] | None = None,
                       complexity: Any = None, category: Any = None) -> ModelRouter:
    """The one way a ``ModelRouterConfig`` (a catalog's ``auto:``, a workflow's ``model_routers:``)
    becomes a ``ModelRouter``. ``complexity`` / ``category`` are the routers the config names, looked
    up by the caller (a workflow's); ConfigError for any inconsistency (the caller locates it)."""
    cx = cfg.complexity
    if complexity is None:
        order = list(cfg.tiers) if cfg.tiers is not None else list(tiers_by_price(catalog))
        complexity = ComplexityRules(order, thresholds=cx.thresholds, long_chars=cx.long_chars, hard_words=cx.hard_words,
                                     name=f"{name}.complexity")
    return ModelRouter(catalog, tiers=cfg.tiers, complexity=complexity, category=category, categories=cfg.categories,
                       prefer=cfg.prefer, min_tier=cfg.min_tier, cooldown=cfg.cooldown, resolve=resolve, name=name)


class RoutedModel:
    """A ChatModel that routes each request with a ``ModelRouter`` and fails over down its candidate
    list (never to a lower tier, never to a model not allowed the request's data classes) — through
    ``Fallback``, the one failover, with the router's cooldowns shared by every request."""

    def __init__(self, router: ModelRouter) -> None:
        self.router = router
        # the most recent decision, for interactive use; each Completion/StreamChunk carries its own
        # ``decision``, which is what concurrent callers (the gateway) read
        self.last: Decision | None = None

    @property
    def name(self) -> str:
        return self.router.name

    @property
    def price(self) -> Price:
        return max((self.router.catalog.spec(m).price for m in self.router.routes), key=_blended)

    def _text(self, request: Request) -> str:
        return "\n".join(m.content for m in request.messages if m.role == "user")

    async def _chain(self, request: Request) -> tuple[Decision, Fallback]:
        """Route, then the candidates as a ``Fallback`` over the router's shared ``Health``."""
        d, cands = await self.router.route(self._text(request))
        self.last = d
        return d, Fallback([self.router.resolve(m) for m in cands], names=cands, health=self.router.health, name=self.name)

    async def complete(self, request: Request) -> Completion:
        d, chain = await self._chain(request)
        return (await chain.complete(request))._replace(decision=d)

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        d, chain = await self._chain(request)
        async with aclosing(chain.stream(request)) as agen:
            async for chunk in agen:
                yield chunk._replace(decision=d)

    async def aclose(self) -> None:
        return None
