"""What every workflow step shares: the template language, the run context (models by name, the
template scope, outputs by step name, a ``Meter`` per branch, what happened so far) and ``Node``,
the base of every step (one step row per run into the active store).

Templates are ``{name}`` or ``{name.field}`` over: ``input`` (what this step receives), ``original``
(the workflow's input), ``steps.NAME`` (an earlier step's output), ``route`` / ``confidence`` (inside
a route's targets), ``section`` / ``title`` / ``index`` (inside a section's map). ``{{`` is a brace.
"""

from __future__ import annotations

import contextvars
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import _telemetry
from .._errors import TurnoutError
from .._scope import active_run
from .._secrets import describe
from ..models.base import ChatModel
from ..policies.trace import CallEvent, Traced
from ..routing.base import Decision

__all__ = ["Meter", "Node", "RunContext", "StepRecord", "Suspended", "WorkflowError", "as_text", "current_key", "last_escalated", "render",
           "template_names"]


class WorkflowError(TurnoutError):
    """A workflow could not produce an output (a step failed, a template had no value, ...)."""


class Suspended(Exception):  # noqa: N818 - not an error: the run waits for a person
    """A step asked a person (``escalate``, ``approve``): the run stops here and waits. Raised by the
    step, carried up through its parents (which record nothing: they have not finished), caught by
    ``Workflow.run``, which queues ``item`` and stores the run's journal to resume from."""

    telemetry_status = "waiting"  # its span says so; it is not an error

    def __init__(self, key: str, item: dict[str, Any], message: str) -> None:
        super().__init__(f"waiting on queue {item.get('queue')!r}")
        self.key, self.item, self.message = key, item, message


# the key of the node running in this task, and how many branches it has opened (a branch's key is
# its node's key and a tag, so replaying a run finds each step's journal entry again)
_NODE: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("turnout_node", default=None)


def current_key() -> str:
    """The journal key of the step running now ('' outside a step)."""
    n = _NODE.get()
    return n[0] if n is not None else ""


# -- templates --------------------------------------------------------------------------------------
_VAR = re.compile(r"\{\{|\}\}|\{([A-Za-z_][\w-]*(?:\.[\w-]+)*)\}")


def template_names(template: str) -> list[str]:
    """The dotted names a template uses, in order."""
    return [m.group(1) for m in _VAR.finditer(template) if m.group(1)]


def as_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping) and isinstance(v.get("text"), str):
        return v["text"]
    if v is None:
        return ""
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (Mapping, list, tuple, int, float, bool)) else str(v)


def render(template: str, scope: Mapping[str, Any], *, where: str = "") -> str:
    """Fill ``{name.field}`` from ``scope``; a name with no value is a WorkflowError naming it."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        path = m.group(1).split(".")
        if path[0] not in scope:
            raise WorkflowError(f"{where}template variable {{{m.group(1)}}} has no value here (known: {', '.join(sorted(scope))})")
        v = scope[path[0]]
        for i, key in enumerate(path[1:], 1):
            if isinstance(v, Mapping) and key in v:
                v = v[key]
            else:
                what = ".".join(path[:i])
                hint = "; that step did not run on this path" if path[0] == "steps" and i == 1 else ""
                raise WorkflowError(f"{where}template variable {{{m.group(1)}}}: {what} has no {key!r}{hint}")
        return as_text(v)

    return _VAR.sub(sub, template)


# -- the run context -------------------------------------------------------------------------------
class Meter:
    """Counts calls, tokens and cost; a branch's meter also counts into its parent's."""

    def __init__(self, parent: Meter | None = None) -> None:
        self.parent = parent
        self.calls = self.errors = self.input_tokens = self.output_tokens = 0
        self.cost_usd = 0.0

    def record(self, e: CallEvent) -> None:
        m: Meter | None = self
        while m is not None:
            m.calls += 1
            m.errors += not e.ok
            m.input_tokens += e.usage.input_tokens
            m.output_tokens += e.usage.output_tokens
            m.cost_usd += e.cost_usd
            m = m.parent


@dataclass
class StepRecord:
    name: str
    kind: str
    status: str
    latency_s: float
    cost_usd: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What one run needs: how to get a model by name, the scope of templates, what happened so far."""

    resolve: Callable[[str], ChatModel]
    default_model: str = "local"
    original: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    meter: Meter = field(default_factory=Meter)
    decisions: list[tuple[str, Decision]] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    sample: int | None = None  # the vote sample this branch is producing (seed and temperature)
    _models: dict[str, ChatModel] = field(default_factory=dict)
    # the run's journal (key -> what a finished step produced), what to replay from (a resumed run's
    # journal) and the resolutions of the people it waited on (step key -> resolution); one per run
    journal: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] = field(default_factory=dict)
    resolutions: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # this branch's key; its steps are key/1, key/2, ... in the order they start
    _n: list[int] = field(default_factory=lambda: [0])
    _metered: dict[str, ChatModel] = field(default_factory=dict)  # this context's own: its meter over the run's models

    def next_key(self) -> str:
        self._n[0] += 1
        return f"{self.key}/{self._n[0]}"

    def model(self, name: str | None) -> ChatModel:
        n = name or self.default_model
        m = self._metered.get(n)
        if m is None:
            inner = self._models.get(n)
            if inner is None:
                inner = self._models[n] = self.resolve(n)  # resolved once per run, shared by its branches
            # the meter only (each branch counts its own calls, into its parent's): the model's own
            # ``Traced`` (catalog, or Workflow's models=) writes the store
            m = self._metered[n] = Traced(inner, self.meter, attribute=False)
        return m

    def branch(self, tag: str | None = None, **vars: Any) -> RunContext:
        """A context for one parallel branch: its own outputs and meter (counting into this one).
        ``tag`` names the branch within the step that opens it (a section's index, a sample's number),
        so a resumed run finds the branch's steps again; untagged branches are numbered."""
        n = _NODE.get()
        if tag is None:
            if n is not None:
                n[1] += 1
            tag = f"b{n[1] if n is not None else 0}"
        return RunContext(self.resolve, self.default_model, self.original, dict(self.outputs), {**self.vars, **vars},
                          Meter(self.meter), self.decisions, self.steps, self.escalations, vars.get("_sample", self.sample),
                          self._models, self.journal, self.replay, self.resolutions, f"{n[0] if n is not None else self.key}:{tag}")

    def scope(self, value: Any) -> dict[str, Any]:
        return {"input": value, "original": self.original, "steps": self.outputs, **{k: v for k, v in self.vars.items() if k[0] != "_"}}


def record_step(ctx: RunContext, name: str, kind: str, status: str, t0: float, cost0: float, detail: dict[str, Any]) -> StepRecord:
    """One step of the run (a node, or a tool call inside an agent): in the context and the active store."""
    n = _NODE.get()
    if n is not None and "parent" not in detail and n[0] != detail.get("node"):  # a tool call inside an agent: under the agent
        detail["parent"] = n[0]
    rec = StepRecord(name, kind, status, time.perf_counter() - t0, ctx.meter.cost_usd - cost0, detail)
    ctx.steps.append(rec)
    a = active_run()
    if a is not None:
        a[0].record_step(rec.name, rec.kind, latency_s=rec.latency_s, status=status, cost_usd=rec.cost_usd, detail=detail, run_id=a[1])
    return rec


def last_escalated(ctx: RunContext) -> bool:
    """The step that just finished handed the input to people (its parent reports that too)."""
    return bool(ctx.steps) and ctx.steps[-1].status == "escalated"


class Node:
    name: str = ""
    kind: str = "step"

    async def run(self, ctx: RunContext, value: Any) -> Any:
        key = ctx.next_key()
        if ctx.replay:
            done = ctx.replay.get(key)
            if done is not None:
                return self._replayed(ctx, key, done)
        outer = _NODE.get()
        token = _NODE.set([key, 0])
        t0, cost0 = time.perf_counter(), ctx.meter.cost_usd
        # its place in the run's tree: the dashboard and GET /v1/runs/{id} nest the steps by these
        detail: dict[str, Any] = {"node": key, **({"parent": outer[0]} if outer is not None else {})}
        status = "ok"
        try:
            with _telemetry.span(f"step {self.kind}" + (f" {self.name}" if self.name else ""),
                                 {"turnout.step.kind": self.kind, "turnout.step.name": self.name or self.kind}) as s:
                out = await self._run(ctx, value, detail)
                _telemetry.set_attributes(s, {"turnout.status": detail.get("_status", "ok")})
        except Suspended:
            raise  # not finished: recorded when the run resumes and this step ends
        except BaseException as e:
            status = "cancelled" if isinstance(e, (KeyboardInterrupt, SystemExit)) or type(e).__name__ == "CancelledError" else "error"
            detail["error"] = describe(e)[:300]
            self._record(ctx, status, t0, cost0, detail)
            raise
        finally:
            _NODE.reset(token)
        status = detail.pop("_status", "ok")
        rec = self._record(ctx, status, t0, cost0, detail)
        ctx.journal[key] = [self.kind, self.name, status, out, rec.latency_s, rec.cost_usd]
        if self.name:
            ctx.outputs[self.name] = out
        return out

    def _replayed(self, ctx: RunContext, key: str, done: list[Any]) -> Any:
        """A step the run finished before it waited: its output again, with no call made (resume)."""
        kind, name, status, out, latency, cost = done
        if kind != self.kind or name != self.name:
            raise WorkflowError(f"the waiting run's step {key} was {kind} {name!r}, the workflow has {self.kind} {self.name!r} there")
        ctx.journal[key] = done
        ctx.steps.append(StepRecord(name or kind, kind, status, latency, cost, {"replayed": True}))
        if self.name:
            ctx.outputs[self.name] = out
        return out

    def _record(self, ctx: RunContext, status: str, t0: float, cost0: float, detail: dict[str, Any]) -> StepRecord:
        return record_step(ctx, self.name or self.kind, self.kind, status, t0, cost0, detail)

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        raise NotImplementedError


