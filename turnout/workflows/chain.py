"""Prompt chains with gates: each step's prompt sees the input and every earlier output; a gate
after a step can let the chain continue, stop it (with a reason), or divert it to another step."""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import ConfigError
from .._types import Completion, Request, ResponseFormat
from ..models.base import ChatModel

__all__ = ["Chain", "ChainResult", "Gate", "Step"]


@dataclass(frozen=True, slots=True)
class Gate:
    action: Literal["continue", "stop", "divert"] = "continue"
    reason: str = ""
    to: str = ""  # the step to divert to


GateFn = Callable[[str, dict[str, str]], "Gate | bool | str | None | Awaitable[Gate | bool | str | None]"]


@dataclass(frozen=True)
class Step:
    """``prompt`` is a ``str.format`` template over ``{input}`` and earlier steps' names."""

    name: str
    prompt: str
    model: ChatModel | None = None
    system: str | None = None
    gate: GateFn | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    response_format: ResponseFormat | None = None


@dataclass
class ChainResult:
    outputs: dict[str, str]
    trail: list[tuple[str, str]] = field(default_factory=list)  # (step, what happened after it)
    stopped: bool = False
    stop_reason: str = ""
    cost_usd: float = 0.0

    @property
    def final(self) -> str:
        return next(reversed(self.outputs.values()), "")


def _as_gate(g: Any) -> Gate:
    if isinstance(g, Gate):
        return g
    if g is None or g is True:
        return Gate()
    if g is False:
        return Gate("stop", "gate returned False")
    if isinstance(g, str):
        return Gate("divert", f"gate diverted to {g}", g)
    raise ConfigError(f"a gate must return Gate, bool, a step name or None, not {type(g).__name__}")


class Chain:
    def __init__(self, steps: Sequence[Step], *, model: ChatModel | None = None, max_steps: int = 50) -> None:
        if not steps:
            raise ConfigError("a Chain needs at least one step")
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate step names in chain: {names}")
        for i, s in enumerate(steps):
            if s.model is None and model is None:
                raise ConfigError(f"step {s.name!r} has no model and the chain has no default model")
            fields = {f for _, f, _, _ in string.Formatter().parse(s.prompt) if f}
            unknown = fields - {"input", *names}
            if unknown:
                raise ConfigError(f"step {s.name!r} uses unknown template fields: {', '.join(sorted(unknown))}")
            later = fields & set(names[i:])
            if later:
                raise ConfigError(f"step {s.name!r} uses the output of a later step: {', '.join(sorted(later))}")
        self.steps = list(steps)
        self.index = {s.name: i for i, s in enumerate(steps)}
        self.model = model
        self.max_steps = max_steps

    async def run(self, input: str) -> ChainResult:
        res = ChainResult({})
        i = executed = 0
        while i < len(self.steps):
            executed += 1
            if executed > self.max_steps:
                res.stopped, res.stop_reason = True, f"more than {self.max_steps} steps: a gate keeps diverting backwards"
                break
            st = self.steps[i]
            values = {n: res.outputs.get(n, "") for n in self.index}
            req = Request.of(st.prompt.format(input=input, **values), system=st.system, max_tokens=st.max_tokens,
                             temperature=st.temperature, response_format=st.response_format, metadata={"step": st.name})
            c: Completion = await (st.model or self.model).complete(req)  # type: ignore[union-attr]
            res.outputs[st.name] = c.text
            res.cost_usd += c.cost_usd
            gate = Gate()
            if st.gate is not None:
                g = st.gate(c.text, dict(res.outputs))
                if hasattr(g, "__await__"):
                    g = await g  # type: ignore[misc]
                gate = _as_gate(g)
            res.trail.append((st.name, gate.action + (f" ({gate.reason})" if gate.reason else "")))
            if gate.action == "stop":
                res.stopped, res.stop_reason = True, gate.reason or f"stopped after {st.name}"
                break
            if gate.action == "divert":
                if gate.to not in self.index:
                    raise ConfigError(f"gate after {st.name!r} diverted to unknown step {gate.to!r}")
                i = self.index[gate.to]
            else:
                i += 1
        return res
