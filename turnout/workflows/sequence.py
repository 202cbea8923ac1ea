"""The one gated sequence: steps in order, each receiving the previous one's output, with a gate
after any named step that continues, stops the sequence (with a reason) or diverts it to another
step — loops bounded by ``max_steps``. A gate is a ``StepGate`` (the YAML ``gate:`` checks) or a
predicate ``fn(output, outputs)`` returning ``Gate``, True/None (continue), False (stop), a step
name (divert) — or an awaitable of one. ``Chain`` (``turnout.workflows.chain``) builds one of these.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from .._errors import ConfigError
from .context import Node, RunContext, as_text, last_escalated, render
from .people import is_rejected

__all__ = ["Gate", "GateFn", "Sequence", "StepGate"]


@dataclass(frozen=True, slots=True)
class Gate:
    """What a gate decided: ``continue``, ``stop`` (with ``reason``) or ``divert`` to step ``to``."""

    action: Literal["continue", "stop", "divert"] = "continue"
    reason: str = ""
    to: str = ""


GateFn = Callable[[Any, dict[str, Any]], Any]  # -> Gate | bool | str | None, or an awaitable of one


def as_gate(g: Any) -> Gate:
    if isinstance(g, Gate):
        return g
    if g is None or g is True:
        return Gate()
    if g is False:
        return Gate("stop", "gate returned False")
    if isinstance(g, str):
        return Gate("divert", f"gate diverted to {g}", g)
    raise ConfigError(f"a gate must return Gate, bool, a step name or None, not {type(g).__name__}")


@dataclass
class StepGate:
    """A check on a step's output: all given conditions must hold. On failure: ``stop`` the chain
    (the output becomes ``message`` if given) or divert to the step named ``divert``."""

    _: KW_ONLY
    regex: str | None = None
    contains: str | None = None
    not_contains: str | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    is_json: bool = False
    divert: str | None = None
    message: str | None = None

    async def __call__(self, out: Any, outputs: dict[str, Any]) -> Gate:
        why = self.check(out)
        if why is None:
            return Gate()
        return Gate("divert", why, self.divert) if self.divert is not None else Gate("stop", why)

    def check(self, out: Any) -> str | None:
        """None if it passes, else why not."""
        text = as_text(out)
        if self.regex is not None and not re.search(self.regex, text, re.S | re.I):
            return f"output does not match /{self.regex}/"
        if self.contains is not None and self.contains.lower() not in text.lower():
            return f"output does not contain {self.contains!r}"
        if self.not_contains is not None and self.not_contains.lower() in text.lower():
            return f"output contains {self.not_contains!r}"
        if self.min_chars is not None and len(text) < self.min_chars:
            return f"output is {len(text)} characters < {self.min_chars}"
        if self.max_chars is not None and len(text) > self.max_chars:
            return f"output is {len(text)} characters > {self.max_chars}"
        if self.is_json and not isinstance(out, (Mapping, list)):
            try:
                json.loads(text)
            except ValueError:
                return "output is not JSON"
        return None


@dataclass
class Sequence(Node):
    """Steps in order, each receiving the previous one's output; a gate after a named step (a
    ``StepGate`` or a predicate) may stop or divert (loops are bounded by ``max_steps``)."""

    steps: list[Node] = field(default_factory=list)
    _: KW_ONLY
    gates: Mapping[str, StepGate | GateFn] = field(default_factory=dict)
    max_steps: int = 20
    name: str = ""
    kind: str = "chain"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        index = {s.name: i for i, s in enumerate(self.steps) if s.name}
        i = executed = 0
        cur = value
        trail: list[str] = []
        while i < len(self.steps):
            executed += 1
            if executed > self.max_steps:
                detail.update(trail=trail, _status="stopped", stop_reason=f"more than {self.max_steps} steps (a gate keeps diverting)")
                return cur
            st = self.steps[i]
            cur = await st.run(ctx, cur)
            if last_escalated(ctx):
                detail["_status"] = "escalated"
            if is_rejected(ctx):  # a person refused the output: nothing after it runs
                trail.append(f"{st.name or st.kind}: rejected -> stop")
                detail.update(trail=trail, _status="rejected", stop_reason="rejected by a person")
                return cur
            gate = self.gates.get(st.name) if st.name else None
            g = await _decide(gate, cur, ctx) if gate is not None else Gate()
            if g.action == "continue":
                trail.append(st.name or st.kind)
                i += 1
            elif g.action == "divert":
                if g.to not in index:
                    raise ConfigError(f"gate after {st.name!r} diverted to unknown step {g.to!r} (steps: {', '.join(index)})")
                trail.append(f"{st.name}: {g.reason} -> {g.to}")
                i = index[g.to]
            else:
                why = g.reason or f"stopped after {st.name}"
                trail.append(f"{st.name}: {why} -> stop")
                detail.update(trail=trail, _status="stopped", stop_reason=why)
                message = getattr(gate, "message", None)
                return render(message, {**ctx.scope(cur), "reason": why}) if message else cur
        if len(trail) > 1:
            detail["trail"] = trail
        return cur


async def _decide(gate: Any, out: Any, ctx: RunContext) -> Gate:
    g = gate(out, dict(ctx.outputs))
    if inspect.isawaitable(g):
        g = await g
    return as_gate(g)
