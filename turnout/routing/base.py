"""The routing contract: every router returns one ``Decision``; fallback and escalation are applied
by one pure function, so nothing ever dead-ends and nothing is silently misrouted.

A router's raw decision names the route it chose (or ``None``: it abstains) with a confidence in
[0, 1] and per-route scores. ``finalize`` then applies the router's policy:

- chosen and confident           -> ``outcome="matched"``
- chosen but below ``escalate_below`` and an escalation route exists -> ``outcome="escalated"``
- abstained (or low confidence with no escalation route) and a fallback exists -> ``outcome="fallback"``
- otherwise                      -> ``outcome="abstained"``, ``route=None``
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from .. import _telemetry
from .._errors import ConfigError
from .._scope import active_run

__all__ = [
    "Decision",
    "Route",
    "RouteInput",
    "Router",
    "finalize",
    "input_fields",
    "input_text",
    "logged",
    "target_of",
]

Outcome = Literal["matched", "escalated", "fallback", "abstained"]
RouteInput = str | Mapping[str, Any]  # text, or a record with "text" and structured fields
TargetKind = Literal["handler", "workflow", "escalation", "none"]

_EMPTY: Mapping[str, float] = {}


class Decision(NamedTuple):
    """What a router decided. ``route`` is where to go (after fallback/escalation); ``chosen`` is
    what the classifier itself picked (None = it abstained)."""

    route: str | None
    confidence: float
    scores: Mapping[str, float] = _EMPTY
    kind: str = ""  # "rule" | "semantic" | "llm" | "cascade"
    reason: str = ""
    latency_s: float = 0.0
    outcome: Outcome = "matched"
    chosen: str | None = None
    stage: str | None = None  # the cascade stage (router kind/name) that decided
    cost_usd: float = 0.0

    @property
    def abstained(self) -> bool:
        return self.chosen is None


@dataclass(frozen=True, slots=True)
class Route:
    """A route and what defines it: examples for semantic routing, keywords/regexes/field rules for
    rule routing, a description for LLM routing, and a target (what to run when it is chosen)."""

    name: str
    description: str = ""
    utterances: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    fields: tuple[tuple[str, str, Any], ...] = ()  # (field, op, value), op in == != in not_in contains > < >= <=
    threshold: float | None = None  # semantic: the least score to accept this route
    target: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"handler": "billing", "model": "local"}
    synonyms: tuple[str, ...] = ()  # LLM labels that mean this route

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigError("a route needs a name")
        for attr in ("utterances", "keywords", "regexes", "synonyms", "fields"):
            v = getattr(self, attr)
            if isinstance(v, str):
                raise ConfigError(f"route {self.name!r}: {attr} must be a list, not one string")
            if not isinstance(v, tuple):
                object.__setattr__(self, attr, tuple(tuple(x) if attr == "fields" else x for x in v))

    @property
    def target_kind(self) -> TargetKind:
        for k in ("handler", "workflow", "escalation"):
            if k in self.target:
                return k  # type: ignore[return-value]
        return "none"


def check_routes(routes: Sequence[Route], *, who: str) -> dict[str, Route]:
    if not routes:
        raise ConfigError(f"{who} needs at least one route")
    out: dict[str, Route] = {}
    for r in routes:
        if r.name in out:
            raise ConfigError(f"{who}: duplicate route {r.name!r}")
        out[r.name] = r
    return out


def check_policy_routes(names: Sequence[str], fallback: str | None, escalation: str | None, *, who: str) -> None:
    for label, r in (("fallback", fallback), ("escalation", escalation)):
        if r is not None and r not in names:
            raise ConfigError(f"{who}: {label} route {r!r} is not one of its routes ({', '.join(names)})")


def input_text(x: RouteInput) -> str:
    if isinstance(x, str):
        return x
    t = x.get("text")
    if t is None:
        return ""
    return t if isinstance(t, str) else str(t)


def input_fields(x: RouteInput) -> Mapping[str, Any]:
    return _EMPTY if isinstance(x, str) else x


@runtime_checkable
class Router(Protocol):
    kind: str
    fallback: str | None
    escalation: str | None
    escalate_below: float

    routes: Mapping[str, Route]

    @property
    def route_names(self) -> list[str]: ...

    async def decide(self, x: RouteInput) -> Decision:
        """The final decision (fallback/escalation applied), recorded into the active run. The
        built-in routers also have ``decision(x)``: the same, not recorded (``Recorded``)."""
        ...

    async def decide_many(self, xs: Sequence[RouteInput]) -> list[Decision]: ...


def target_of(router: Router, decision: Decision) -> Mapping[str, Any]:
    """The target of the route a decision chose (``{}`` when it abstained or the route has none)."""
    if decision.route is None:
        return {}
    r = router.routes.get(decision.route)
    return r.target if r is not None else {}


def finalize(
    raw: Decision, *, fallback: str | None, escalation: str | None, escalate_below: float, t0: float | None = None
) -> Decision:
    """Apply a router's fallback/escalation policy to its raw decision (pure but for the clock)."""
    latency = time.perf_counter() - t0 if t0 is not None else raw.latency_s
    chosen = raw.chosen if raw.chosen is not None else raw.route
    if chosen is not None and raw.confidence >= escalate_below:
        return raw._replace(route=chosen, chosen=chosen, outcome="matched", latency_s=latency)
    if chosen is not None and escalation is not None:
        return raw._replace(
            route=escalation, chosen=chosen, outcome="escalated", latency_s=latency,
            reason=f"{raw.reason}; confidence {raw.confidence:.2f} < {escalate_below:.2f}: escalated",
        )
    why = "abstained" if chosen is None else f"confidence {raw.confidence:.2f} < {escalate_below:.2f}"
    if fallback is not None:
        return raw._replace(route=fallback, chosen=chosen, outcome="fallback", latency_s=latency,
                            reason=f"{raw.reason}; {why}: fallback")
    return raw._replace(route=None, chosen=chosen, outcome="abstained", latency_s=latency, reason=f"{raw.reason}; {why}")


def logged(router: Any, x: RouteInput, d: Decision) -> Decision:
    """Record ``d`` into the active run's store (``with store.run(...)``), if any; return it."""
    a = active_run()
    name = getattr(router, "name", "") or router.kind
    if a is not None:
        a[0].record_decision(d, router=name, input=input_text(x), run_id=a[1])
    _telemetry.decision(name, d)  # a span under the step that routed (tracing on)
    return d


def logged_many(router: Any, xs: Sequence[RouteInput], ds: list[Decision]) -> list[Decision]:
    if active_run() is not None:
        for x, d in zip(xs, ds, strict=True):
            logged(router, x, d)
    return ds


class Recorded:
    """How a router's decisions are recorded — the way ``Traced`` records a model's calls: a router
    decides in ``decision(x)`` / ``decisions(xs)`` (nothing recorded) and ``decide`` /
    ``decide_many`` record what they return into the active run. A router made of routers (a
    cascade, a model router) asks its parts with ``unrecorded``, so only its own decision is kept."""

    async def decision(self, x: RouteInput) -> Decision:
        raise NotImplementedError

    async def decisions(self, xs: Sequence[RouteInput]) -> list[Decision]:
        return [await self.decision(x) for x in xs]

    async def decide(self, x: RouteInput) -> Decision:
        return logged(self, x, await self.decision(x))

    async def decide_many(self, xs: Sequence[RouteInput]) -> list[Decision]:
        return logged_many(self, xs, await self.decisions(xs))


async def unrecorded(router: Any, x: RouteInput) -> Decision:
    """A part's decision, not recorded on its own (a router of your own without ``decision`` is asked
    with ``decide``)."""
    f = getattr(router, "decision", None)
    return await (f(x) if f is not None else router.decide(x))  # type: ignore[no-any-return]


async def unrecorded_many(router: Any, xs: Sequence[RouteInput]) -> list[Decision]:
    f = getattr(router, "decisions", None)
    return await (f(xs) if f is not None else router.decide_many(xs))  # type: ignore[no-any-return]
