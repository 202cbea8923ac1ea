"""RuleRouter: keywords, regexes and predicates on structured fields, in priority order.

Deterministic and microsecond-fast: each route's keywords are compiled into one case-insensitive,
word-boundary regex; the first rule that fires wins with confidence 1.0.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._errors import ConfigError
from .base import Decision, Recorded, Route, RouteInput, check_policy_routes, check_routes

__all__ = ["Rule", "RuleRouter"]

_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})  # a str input has no fields (read, never written)

_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
    "contains": lambda a, b: b in a if a is not None else False,
}


def _boundary_pattern(word: str) -> re.Pattern[str]:
    left = r"\b" if re.match(r"\w", word) else ""
    right = r"\b" if re.search(r"\w$", word) else ""
    return re.compile(f"{left}{re.escape(word)}{right}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. ``kind`` is "keywords", "regex" or "field"."""

    route: str
    kind: str
    pattern: re.Pattern[str] | None = None  # regex rules
    needles: tuple[tuple[str, re.Pattern[str]], ...] = ()  # keyword rules: (lower-case keyword, boundary check)
    field: str = ""
    op: str = "=="
    value: Any = None
    label: str = ""

    def fires(self, text: str, low: str, fields: Mapping[str, Any]) -> str | None:
        """The matched evidence (for the reason), or None. ``low`` is ``text.lower()``."""
        if self.needles:
            # a C-speed substring test first; the word-boundary regex only runs on a candidate
            for kw, check in self.needles:
                if kw in low and check.search(text):
                    return kw
            return None
        if self.pattern is not None:
            m = self.pattern.search(text)
            return m.group(0) if m else None
        if not fields or self.field not in fields:
            return None
        try:
            ok = _OPS[self.op](fields[self.field], self.value)
        except TypeError:
            return None  # e.g. comparing a string with a number: the rule does not fire
        return f"{self.field} {self.op} {self.value!r}" if ok else None


def rules_from_routes(routes: Sequence[Route]) -> list[Rule]:
    """Priority: routes in the order given; within a route, field rules, then regexes, then keywords."""
    rules: list[Rule] = []
    for r in routes:
        for f, op, value in r.fields:
            if op not in _OPS:
                raise ConfigError(f"route {r.name!r}: unknown field operator {op!r}; use one of {', '.join(_OPS)}")
            rules.append(Rule(r.name, "field", field=f, op=op, value=value, label=f"field {f} {op} {value!r}"))
        for rx in r.regexes:
            try:
                pat = re.compile(rx, re.IGNORECASE)
            except re.error as e:
                raise ConfigError(f"route {r.name!r}: bad regex {rx!r}: {e}") from None
            rules.append(Rule(r.name, "regex", pat, label=f"regex /{rx}/"))
        kws = sorted({k.strip().lower() for k in r.keywords if k.strip()}, key=len, reverse=True)
        if kws:
            rules.append(Rule(r.name, "keywords", needles=tuple((k, _boundary_pattern(k)) for k in kws), label="keyword"))
    return rules


class RuleRouter(Recorded):
    kind = "rule"

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        fallback: str | None = None,
        escalation: str | None = None,
        name: str = "rules",
    ) -> None:
        self.routes = check_routes(routes, who=f"RuleRouter {name!r}")
        check_policy_routes(list(self.routes), fallback, escalation, who=f"RuleRouter {name!r}")
        self.rules = rules_from_routes(routes)
        self.fallback = fallback
        self.escalation = escalation
        self.escalate_below = 0.0  # a rule either fires (confidence 1) or abstains
        self.name = name

    @property
    def route_names(self) -> list[str]:
        return list(self.routes)

    def decide_sync(self, x: RouteInput) -> Decision:
        t0 = time.perf_counter()
        if type(x) is str:
            text, fields = x, _NO_FIELDS
        else:
            text = str(x.get("text") or "")  # type: ignore[union-attr]
            fields = x
        low = text.lower()
        for rule in self.rules:
            needles = rule.needles
            if needles:  # keyword rules, inlined (the hot path): a C-speed substring test, then the boundary check
                ev = None
                for kw, check in needles:
                    if kw in low and check.search(text):
                        ev = kw
                        break
                if ev is None:
                    continue
                reason = f"keyword {ev!r}"
            else:
                ev = rule.fires(text, low, fields)  # type: ignore[arg-type]
                if ev is None:
                    continue
                reason = ev if rule.kind == "field" else f"{rule.label} {ev!r}"
            return Decision(rule.route, 1.0, {rule.route: 1.0}, "rule", reason, time.perf_counter() - t0, "matched", rule.route,
                            self.name)
        if self.fallback is not None:  # what finalize() would give, built directly on this hot path
            return Decision(self.fallback, 0.0, {}, "rule", "no rule fired; abstained: fallback",
                            time.perf_counter() - t0, "fallback", None, self.name)
        return Decision(None, 0.0, {}, "rule", "no rule fired; abstained", time.perf_counter() - t0, "abstained", None, self.name)

    async def decision(self, x: RouteInput) -> Decision:
        return self.decide_sync(x)

    async def decisions(self, xs: Sequence[RouteInput]) -> list[Decision]:
        return [self.decide_sync(x) for x in xs]
