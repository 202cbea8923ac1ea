"""Workflow steps as objects: the Python door to what a YAML workflow compiles to.

A workflow is a tree of nodes — ``Call``, ``RouteStep``, ``SectionStep``, ``VoteStep``, ``Sequence``
(a chain with gates), ``OrchestrateStep``, ``GuardStep``, ``Escalate`` — each ``await node.run(ctx,
value)``. Every node is built on the library's own primitives (routers, ``fan_out``, ``vote``,
``guarded``, ``Orchestrator``); the context counts calls, tokens and cost per branch and records
one step row per node into the active store.

Templates are ``{name}`` or ``{name.field}`` over: ``input`` (what this step receives), ``original``
(the workflow's input), ``steps.NAME`` (an earlier step's output), ``route`` / ``confidence`` (inside
a route's targets), ``section`` / ``title`` / ``index`` (inside a section's map). ``{{`` is a brace.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError, TurnoutError
from .._scope import active_run
from .._secrets import describe
from .._types import Completion, Request, ResponseFormat
from ..models.base import ChatModel
from ..parallel.engine import fan_out
from ..parallel.guard import ModelScreen, guarded, rule_screen
from ..parallel.sectioning import Section, Synthesize, concatenate, merge_json, token_counter
from ..parallel.voting import Extractor, VotePrior, vote
from ..policies.trace import CallEvent, Traced
from ..routing.base import Decision, Router

__all__ = [
    "Call", "Escalate", "GuardStep", "Meter", "Node", "OrchestrateStep", "RouteStep", "RunContext", "SectionStep",
    "Sequence", "StepGate", "VoteStep", "WorkflowError", "render", "template_names",
]


class WorkflowError(TurnoutError):
    """A workflow could not produce an output (a step failed, a template had no value, ...)."""


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


class _Metered(Traced):
    """Counts a branch's calls into its meter only (the catalog's own ``Traced`` writes the store)."""

    def _emit(self, event: CallEvent) -> None:
        self.sink.record(event)


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

    def model(self, name: str | None) -> ChatModel:
        n = name or self.default_model
        m = self._models.get(n)
        if m is None:
            m = self._models[n] = _Metered(self.resolve(n), self.meter)
        return m

    def branch(self, **vars: Any) -> RunContext:
        """A context for one parallel branch: its own outputs and meter (counting into this one)."""
        return RunContext(self.resolve, self.default_model, self.original, dict(self.outputs), {**self.vars, **vars},
                          Meter(self.meter), self.decisions, self.steps, self.escalations, vars.get("_sample", self.sample))

    def scope(self, value: Any) -> dict[str, Any]:
        return {"input": value, "original": self.original, "steps": self.outputs, **{k: v for k, v in self.vars.items() if k[0] != "_"}}


def _last_escalated(ctx: RunContext) -> bool:
    """The step that just finished handed the input to people (its parent reports that too)."""
    return bool(ctx.steps) and ctx.steps[-1].status == "escalated"


class Node:
    name: str = ""
    kind: str = "step"

    async def run(self, ctx: RunContext, value: Any) -> Any:
        t0, cost0 = time.perf_counter(), ctx.meter.cost_usd
        detail: dict[str, Any] = {}
        status = "ok"
        try:
            out = await self._run(ctx, value, detail)
        except BaseException as e:
            status = "cancelled" if isinstance(e, (KeyboardInterrupt, SystemExit)) or type(e).__name__ == "CancelledError" else "error"
            detail["error"] = describe(e)[:300]
            self._record(ctx, status, t0, cost0, detail)
            raise
        status = detail.pop("_status", "ok")
        self._record(ctx, status, t0, cost0, detail)
        if self.name:
            ctx.outputs[self.name] = out
        return out

    def _record(self, ctx: RunContext, status: str, t0: float, cost0: float, detail: dict[str, Any]) -> None:
        rec = StepRecord(self.name or self.kind, self.kind, status, time.perf_counter() - t0, ctx.meter.cost_usd - cost0, detail)
        ctx.steps.append(rec)
        a = active_run()
        if a is not None:
            a[0].record_step(rec.name, rec.kind, latency_s=rec.latency_s, status=status, cost_usd=rec.cost_usd, detail=detail,
                             run_id=a[1])

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        raise NotImplementedError


# -- the steps -------------------------------------------------------------------------------------
@dataclass
class Call(Node):
    """One model call: a prompt template, a system prompt, and the model (a catalog name)."""

    prompt: str = "{input}"
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    json_schema: dict[str, Any] | None = None
    name: str = ""
    kind: str = "call"

    def request(self, ctx: RunContext, value: Any) -> Request:
        scope = ctx.scope(value)
        where = f"step {self.name!r}: " if self.name else ""
        temp, seed = self.temperature, None
        if ctx.sample is not None:  # a vote sample: vary the seed, and sample (not greedy) unless told
            seed, temp = 1000 + ctx.sample, (temp if temp not in (None, 0.0) else 0.7)
        return Request.of(
            render(self.prompt, scope, where=where), system=render(self.system, scope, where=where) if self.system else None,
            max_tokens=self.max_tokens, temperature=temp, seed=seed,
            response_format=ResponseFormat.json_schema(self.json_schema, self.name or "output") if self.json_schema else None,
            metadata={"step": self.name or "call"},
        )

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        m = ctx.model(self.model)
        c: Completion = await m.complete(self.request(ctx, value))
        detail["model"] = c.model
        if self.json_schema:
            try:
                return json.loads(c.text)
            except ValueError:
                raise WorkflowError(f"step {self.name or 'call'!r}: the model's answer is not the JSON asked for: {c.text[:80]!r}") from None
        return c.text


@dataclass
class Escalate(Node):
    """Hand the input to people: recorded in the run (``escalations``) and its status; the output is
    ``message`` (a template)."""

    queue: str = "human"
    message: str = "Your request has been passed to a person ({queue})."
    name: str = ""
    kind: str = "escalate"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        text = render(self.message, {**ctx.scope(value), "queue": self.queue}, where=f"escalation {self.queue!r}: ")
        ctx.escalations.append({"queue": self.queue, "input": as_text(value), "step": self.name})
        detail.update(queue=self.queue, _status="escalated")
        return text


@dataclass
class RouteStep(Node):
    """Decide with a router, then run the target of the route chosen (or ``default``)."""

    router: Router | None = None
    targets: Mapping[str, Node] = field(default_factory=dict)
    default: Node | None = None
    name: str = ""
    kind: str = "route"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        assert self.router is not None
        d = await self.router.decide(value if isinstance(value, (str, Mapping)) else as_text(value))
        ctx.decisions.append((self.name or "route", d))
        detail.update(route=d.route, confidence=round(d.confidence, 4), outcome=d.outcome, reason=d.reason[:200])
        target = self.targets.get(d.route) if d.route is not None else None
        target = target or self.default
        if target is None:
            raise WorkflowError(f"step {self.name or 'route'!r}: no target for {d.route or 'an abstention'} ({d.reason}) and no default")
        sub = ctx.branch(route=d.route, confidence=round(d.confidence, 4))
        sub.meter = ctx.meter  # sequential: count straight into this step
        out = await target.run(sub, value)
        ctx.outputs.update(sub.outputs)
        if _last_escalated(ctx):
            detail["_status"] = "escalated"
        return out


def _count(outputs: Seq[str | None]) -> dict[str, Any]:
    labels: dict[str, int] = {}
    for o in outputs:
        if o is None:
            continue
        key = " ".join(o.strip().lower().strip(".!").split())[:60] or "(empty)"
        labels[key] = labels.get(key, 0) + 1
    n = sum(labels.values())
    return {"count": n, "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
            "shares": {k: round(v / n, 4) for k, v in sorted(labels.items(), key=lambda kv: -kv[1])} if n else {}}


@dataclass
class SectionStep(Node):
    """Split the input, run ``map`` on every section concurrently, aggregate.

    ``aggregate``: ``concatenate`` (with section headers), ``merge_json``, ``count`` (label counts and
    shares of the outputs: aggregated statistics), or a ``Call`` used as the synthesiser (its prompt
    sees ``{outputs}``; hierarchical reduce when they would not fit ``context_tokens``)."""

    split: Callable[[Any], list[Section]] | None = None
    map: Node | None = None
    aggregate: str | Call = "concatenate"
    concurrency: int = 4
    timeout: float | None = None
    context_tokens: int = 4096
    name: str = ""
    kind: str = "section"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        assert self.split is not None and self.map is not None
        if getattr(self.split, "by_tokens", False):  # windows counted by the tokenizer of the model that reads them
            reader = ctx.model(self.map.model) if isinstance(self.map, Call) else None
            sections = self.split(value, count_tokens=token_counter(reader))  # type: ignore[call-arg]
        else:
            sections = self.split(value)
        if not sections:
            raise WorkflowError(f"step {self.name or 'section'!r}: the splitter produced no sections (empty input?)")
        mapper = self.map

        def branch(s: Section) -> Callable[[], Awaitable[Any]]:
            sub = ctx.branch(section=s.text, title=s.title, index=s.index)

            async def go() -> Any:
                return await mapper.run(sub, s.text)
            return go

        res = await fan_out([branch(s) for s in sections], concurrency=self.concurrency, timeout=self.timeout)
        a = active_run()
        if a is not None:
            a[0].record_sections(self.name or "section", res.envelopes, [s.title for s in sections], run_id=a[1])
        failed = [(e.index, f"{e.status}: {e.error}" if e.error else e.status) for e in res.envelopes if not e.ok]
        detail.update(sections=len(sections), failed=len(failed))
        if failed:
            detail["failures"] = [f"section {i}: {why}"[:200] for i, why in failed]
            detail["_status"] = "partial"
        outputs = [as_text(e.value) if e.ok else None for e in res.envelopes]
        if all(o is None for o in outputs):
            raise WorkflowError(f"step {self.name or 'section'!r}: every section failed: {failed[0][1]}")
        agg = self.aggregate
        if agg == "concatenate":
            wrapped = [e._replace(value=Completion(o or "", "")) if e.ok else e for e, o in zip(res.envelopes, outputs, strict=True)]
            return concatenate(sections, wrapped)
        if agg == "merge_json":
            parsed = []
            for i, e in enumerate(res.envelopes):
                if not e.ok:
                    continue
                v = e.value
                if isinstance(v, str):
                    try:
                        v = json.loads(v)
                    except ValueError:
                        detail.setdefault("conflicts", []).append(f"section {i}: not JSON: {v[:60]!r}")
                        continue
                parsed.append(v)
            merged, conflicts = merge_json(parsed)
            if conflicts:
                detail.setdefault("conflicts", []).extend(conflicts)
            return merged
        if agg == "count":
            return _count(outputs)
        if isinstance(agg, Call):
            model = ctx.model(agg.model)
            ok = [f"[{s.title}]\n{o}" for s, o in zip(sections, outputs, strict=True) if o is not None]
            prompt = render(agg.prompt.replace("{outputs}", "\x00OUTPUTS\x00"), ctx.scope(value), where="synthesis: ")
            synth = Synthesize(model, prompt.replace("{", "{{").replace("}", "}}").replace("\x00OUTPUTS\x00", "{outputs}"),
                               context_tokens=self.context_tokens, max_tokens=agg.max_tokens)
            c = await synth(ok, "", self.concurrency)
            detail["synthesis_levels"] = synth.levels
            return c.text
        raise ConfigError(f"step {self.name!r}: unknown aggregate {agg!r}")


@dataclass
class VoteStep(Node):
    """Run ``sample`` up to ``n`` times (different seeds), extract an answer from each, tally, stop
    early when decided; below ``escalate_below`` agreement run ``escalate`` instead."""

    sample: Node | None = None
    n: int = 5
    extract: Extractor | None = None
    rule: str = "plurality"
    tie: str = "first_seen"
    early_stop: str | None = "decided"
    confidence_level: float = 0.95
    wave: int = 2
    escalate_below: float | None = None
    escalate: Node | None = None
    name: str = ""
    kind: str = "vote"
    prior: VotePrior | None = None  # for early_stop="predictive": fitted to this step's logged votes

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        assert self.sample is not None
        sample = self.sample

        async def one(i: int) -> str:
            return as_text(await sample.run(ctx.branch(_sample=i), value))

        kw: dict[str, Any] = {"extract": self.extract} if self.extract is not None else {}
        v = await vote(one, self.n, rule=self.rule, tie=self.tie, early_stop=self.early_stop,  # type: ignore[arg-type]
                       confidence_level=self.confidence_level, prior=self.prior, wave=self.wave, name=self.name or "vote", **kw)
        detail.update(answer=v.answer, agreement=round(v.agreement, 4), samples_used=v.samples_used, samples_planned=self.n,
                      outcome=v.outcome)
        if self.escalate_below is not None and (v.answer is None or v.agreement < self.escalate_below):
            detail["escalated"] = True
            if self.escalate is None:
                detail["_status"] = "low_agreement"
                return v.answer
            sub = ctx.branch(answer=v.answer, agreement=round(v.agreement, 4))
            sub.meter = ctx.meter
            out = await self.escalate.run(sub, value)
            if _last_escalated(ctx):
                detail["_status"] = "escalated"
            return out
        if v.answer is None:
            detail["_status"] = "no_answer"
        return v.answer


@dataclass
class StepGate:
    """A check on a step's output: all given conditions must hold. On failure: ``stop`` the chain
    (the output becomes ``message`` if given) or divert to the step named ``divert``."""

    regex: str | None = None
    contains: str | None = None
    not_contains: str | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    is_json: bool = False
    divert: str | None = None
    message: str | None = None

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
    """Steps in order, each receiving the previous one's output; gates may stop or divert (loops are
    bounded by ``max_steps``)."""

    steps: list[Node] = field(default_factory=list)
    gates: Mapping[str, StepGate] = field(default_factory=dict)
    max_steps: int = 20
    name: str = ""
    kind: str = "chain"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        index = {s.name: i for i, s in enumerate(self.steps) if s.name}
        i = executed = 0
        cur = value
        trail = []
        while i < len(self.steps):
            executed += 1
            if executed > self.max_steps:
                detail.update(trail=trail, _status="stopped", stop_reason=f"more than {self.max_steps} steps (a gate keeps diverting)")
                return cur
            st = self.steps[i]
            cur = await st.run(ctx, cur)
            if _last_escalated(ctx):
                detail["_status"] = "escalated"
            gate = self.gates.get(st.name) if st.name else None
            why = gate.check(cur) if gate is not None else None
            if why is None:
                trail.append(st.name or st.kind)
                i += 1
                continue
            if gate is not None and gate.divert is not None:
                trail.append(f"{st.name}: {why} -> {gate.divert}")
                i = index[gate.divert]
                continue
            trail.append(f"{st.name}: {why} -> stop")
            detail.update(trail=trail, _status="stopped", stop_reason=why)
            return render(gate.message, {**ctx.scope(cur), "reason": why}) if gate is not None and gate.message else cur
        if len(trail) > 1:
            detail["trail"] = trail
        return cur


@dataclass
class OrchestrateStep(Node):
    """A planner model splits the task into subtasks (schema-checked JSON), workers run them
    concurrently (routed per subtask when ``router`` is given), a synthesiser combines them."""

    planner: str | None = None
    worker: str | None = None
    synthesizer: str | None = None
    max_subtasks: int = 4
    max_depth: int = 1
    concurrency: int = 4
    router: Router | None = None
    route_models: Mapping[str, str] = field(default_factory=dict)
    max_tokens: int | None = 384
    name: str = ""
    kind: str = "orchestrate"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        from .orchestrator import Orchestrator

        o = Orchestrator(ctx.model(self.planner), ctx.model(self.worker), ctx.model(self.synthesizer or self.planner),
                         max_subtasks=self.max_subtasks, max_depth=self.max_depth, concurrency=self.concurrency, router=self.router,
                         models={r: ctx.model(m) for r, m in self.route_models.items()} or None, max_tokens=self.max_tokens)
        res = await o.run(as_text(value))
        detail.update(subtasks=[s.title for s in res.subtasks], failed=len(res.failed), notes=res.notes[:5])
        if res.failed:
            detail["_status"] = "partial"
        return res.final


@dataclass
class GuardStep(Node):
    """Answer with ``respond`` while screens check the input; a flag withholds (and cancels) the answer."""

    respond: Call | None = None
    patterns: list[str] = field(default_factory=list)
    screen_model: str | None = None
    policy: str | None = None
    message: str = "Sorry, I can't help with that request."
    name: str = ""
    kind: str = "guard"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        assert self.respond is not None
        screens: list[Any] = []
        if self.patterns:
            screens.append(rule_screen(*self.patterns))
        if self.screen_model is not None:
            screens.append(ModelScreen(ctx.model(self.screen_model), **({"policy": self.policy} if self.policy else {})))
        r = await guarded(ctx.model(self.respond.model), self.respond.request(ctx, value), screens, policy_message=self.message)
        detail.update(withheld=r.withheld, screen=r.screen_reason, response_cancelled=r.response_cancelled)
        if r.withheld:
            detail["_status"] = "withheld"
        return r.text
