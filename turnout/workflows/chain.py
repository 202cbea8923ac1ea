"""Prompt chains with gates, the short way: ``Chain([Step(...), ...], model=m)`` builds the one gated
``Sequence`` (``sequence.py``) of ``Call`` steps over models given as objects, and runs it.

Each step's prompt is a ``str.format``-style template over ``{input}`` (the chain's input) and the
names of earlier steps (their outputs); a gate after a step — ``fn(output, outputs)`` returning
``Gate``, True/None, False or a step name, or an awaitable of one — lets the chain continue, stop it
(with a reason) or divert it to another step, bounded by ``max_steps``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from .._errors import ConfigError
from .._types import ResponseFormat
from ..models.base import ChatModel
from .context import RunContext
from .nodes import Call
from .sequence import Gate, GateFn, Sequence

__all__ = ["Chain", "ChainResult", "Gate", "Step"]


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
    trail: list[str] = field(default_factory=list)  # each step, and where its gate sent the chain
    stopped: bool = False
    stop_reason: str = ""
    cost_usd: float = 0.0

    @property
    def final(self) -> str:
        return next(reversed(self.outputs.values()), "")


def _template(prompt: str) -> str:
    """A chain prompt in the workflow template language: ``{input}`` is the chain's input
    (``{original}``: a sequence step's ``{input}`` is the previous output), ``{NAME}`` a step's output."""
    out = []
    for literal, fname, spec, conv in string.Formatter().parse(prompt):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if fname:
            if spec or conv:
                raise ConfigError(f"chain templates take plain names, not {{{fname}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}")
            out.append("{original}" if fname == "input" else f"{{steps.{fname}}}")
    return "".join(out)


class Chain:
    def __init__(self, steps: Seq[Step], *, model: ChatModel | None = None, max_steps: int = 50) -> None:
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
        self._models = {s.name: s.model or model for s in steps}
        self.sequence = Sequence(
            [Call(_template(s.prompt), model=s.name, system=s.system, max_tokens=s.max_tokens, temperature=s.temperature, name=s.name,
                  response_format=s.response_format) for s in steps],
            gates={s.name: s.gate for s in steps if s.gate is not None}, max_steps=max_steps)

    async def run(self, input: str) -> ChainResult:
        ctx = RunContext(self._models.__getitem__, original=input)  # type: ignore[arg-type]
        await self.sequence.run(ctx, input)
        rec = ctx.steps[-1]  # the sequence's own record: trail, status, stop reason
        return ChainResult({n: ctx.outputs[n] for n in self.index if n in ctx.outputs}, list(rec.detail.get("trail", [])),
                           rec.status == "stopped", rec.detail.get("stop_reason", ""), ctx.meter.cost_usd)
