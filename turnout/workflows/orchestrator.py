"""Orchestrator-workers: a planner model breaks a task into subtasks (JSON, schema-validated), the
workers run them through the fan-out engine (each subtask may be routed to its own model), and a
synthesiser combines their results. Subtasks and depth are bounded."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import BadResponse, ConfigError
from .._types import Request, ResponseFormat
from ..models.base import ChatModel
from ..parallel.engine import Envelope, fan_out

__all__ = ["OrchestrationResult", "Orchestrator", "PlanError", "Subtask"]


class PlanError(BadResponse):
    """The planner's answer was not a usable plan (not JSON, wrong shape, no subtasks)."""


@dataclass(frozen=True, slots=True)
class Subtask:
    title: str
    instruction: str
    breakdown: bool = False  # the planner asked for this subtask to be planned again (depth permitting)


@dataclass
class OrchestrationResult:
    task: str
    subtasks: list[Subtask]
    envelopes: list[Envelope[Any]]
    final: str
    notes: list[str] = field(default_factory=list)
    routes: list[str | None] = field(default_factory=list)
    depth: int = 1
    cost_usd: float = 0.0

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [(s.title, f"{e.status}: {e.error}") for s, e in zip(self.subtasks, self.envelopes, strict=True) if not e.ok]


def plan_schema(max_subtasks: int, nested: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "object", "properties": {"title": {"type": "string"}, "instruction": {"type": "string"}},
                            "required": ["title", "instruction"]}
    if nested:
        item["properties"]["breakdown"] = {"type": "boolean"}
    return {"type": "object", "properties": {"subtasks": {"type": "array", "items": item, "minItems": 1, "maxItems": max_subtasks}},
            "required": ["subtasks"]}


def parse_plan(text: str, max_subtasks: int) -> tuple[list[Subtask], list[str]]:
    """Validate a plan; too many subtasks are cut to the bound (and noted), a bad plan is a PlanError."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise PlanError(f"the planner's answer is not JSON: {text[:120]!r}") from None
    items = doc.get("subtasks") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise PlanError(f"the plan has no 'subtasks' list: {text[:120]!r}")
    out: list[Subtask] = []
    notes: list[str] = []
    for k, it in enumerate(items):
        if not isinstance(it, dict) or not str(it.get("instruction", "")).strip():
            notes.append(f"subtask {k} has no instruction: skipped")
            continue
        out.append(Subtask(str(it.get("title") or f"Subtask {k + 1}"), str(it["instruction"]), bool(it.get("breakdown", False))))
    if not out:
        raise PlanError("the plan's subtasks have no instructions")
    if len(out) > max_subtasks:
        notes.append(f"the planner returned {len(out)} subtasks; only the first {max_subtasks} run")
        out = out[:max_subtasks]
    return out, notes


class Orchestrator:
    def __init__(
        self,
        planner: ChatModel,
        worker: ChatModel,
        synthesizer: ChatModel | None = None,
        *,
        max_subtasks: int = 6,
        max_depth: int = 1,
        concurrency: int = 4,
        timeout: float | None = None,
        router: Any = None,
        models: Mapping[str, ChatModel] | None = None,
        max_tokens: int | None = 512,
        plan_max_tokens: int = 1024,
    ) -> None:
        if max_subtasks < 1 or max_depth < 1:
            raise ConfigError("max_subtasks and max_depth must be >= 1")
        if router is not None and not models:
            raise ConfigError("routing subtasks needs models={route: model}")
        self.planner, self.worker, self.synthesizer = planner, worker, synthesizer or planner
        self.max_subtasks, self.max_depth = max_subtasks, max_depth
        self.concurrency, self.timeout = concurrency, timeout
        self.router, self.models = router, dict(models or {})
        self.max_tokens = max_tokens
        self.plan_max_tokens = plan_max_tokens

    async def plan(self, task: str, depth: int) -> tuple[list[Subtask], list[str], float]:
        nested = depth < self.max_depth
        req = Request.of(
            f"Task:\n{task}\n\nBreak the task into at most {self.max_subtasks} independent subtasks that together solve it; one sentence per instruction. "
            + ("Mark a subtask with breakdown=true if it is itself too big for one step. " if nested else "")
            + 'Reply with JSON {"subtasks": [{"title": ..., "instruction": ...}]}.',
            system="You plan work for parallel workers.", temperature=0.0, max_tokens=self.plan_max_tokens,
            response_format=ResponseFormat.json_schema(plan_schema(self.max_subtasks, nested), "plan"),
        )
        c = await self.planner.complete(req)
        if c.finish_reason == "length":
            raise PlanError(f"the plan was cut off at {self.plan_max_tokens} tokens; raise plan_max_tokens", model=c.model)
        subtasks, notes = parse_plan(c.text, self.max_subtasks)
        return subtasks, notes, c.cost_usd

    async def _work(self, task: str, st: Subtask, depth: int) -> tuple[str, str | None, float]:
        if st.breakdown and depth < self.max_depth:
            inner = await self.run(f"{task}\n\nSubtask: {st.instruction}", depth=depth + 1)
            return inner.final, "orchestrated", inner.cost_usd
        model, route = self.worker, None
        if self.router is not None:
            d = await self.router.decide(st.instruction)
            route = d.route
            model = self.models.get(route or "", self.worker)
        c = await model.complete(Request.of(f"Overall task:\n{task}\n\nYour subtask ({st.title}):\n{st.instruction}",
                                            system="You complete one part of a larger task.", max_tokens=self.max_tokens))
        return c.text, route, c.cost_usd

    async def run(self, task: str, *, depth: int = 1) -> OrchestrationResult:
        subtasks, notes, cost = await self.plan(task, depth)
        res = await fan_out([lambda s=s: self._work(task, s, depth) for s in subtasks], concurrency=self.concurrency, timeout=self.timeout)
        done = [(s, e.value) for s, e in zip(subtasks, res.envelopes, strict=True) if e.ok]
        routes = [e.value[1] if e.ok else None for e in res.envelopes]
        cost += sum(v[2] for _, v in done)
        for s, e in zip(subtasks, res.envelopes, strict=True):
            if not e.ok:
                notes.append(f"subtask {s.title!r} failed: {e.status} {e.error or ''}".strip())
        if not done:
            return OrchestrationResult(task, subtasks, res.envelopes, "", notes + ["every subtask failed"], routes, depth, cost)
        parts = "\n\n".join(f"## {s.title}\n{v[0]}" for s, v in done)
        c = await self.synthesizer.complete(Request.of(f"Task:\n{task}\n\nResults of the subtasks:\n{parts}\n\nWrite the final answer.",
                                                       system="You combine partial results into one answer.", max_tokens=self.max_tokens))
        return OrchestrationResult(task, subtasks, res.envelopes, c.text, notes, routes, depth, cost + c.cost_usd)
