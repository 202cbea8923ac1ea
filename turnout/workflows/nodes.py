"""Workflow steps as objects: the Python door to what a YAML workflow compiles to.

A workflow is a tree of nodes — ``Call``, ``RouteStep``, ``SectionStep``, ``VoteStep``, ``Sequence``
(a chain with gates, in ``sequence.py``), ``OrchestrateStep``, ``GuardStep``, ``Escalate`` — each
``await node.run(ctx, value)`` (``Node`` and ``RunContext`` are in ``context.py``). Every node is built on the library's own primitives (routers, ``fan_out``, ``vote``,
``guarded``, ``Orchestrator``); the context counts calls, tokens and cost per branch and records
one step row per node into the active store.

Templates: see ``context.py``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from .._errors import ConfigError
from .._scope import active_run
from .._types import Completion, Request, ResponseFormat
from ..parallel.engine import fan_out
from ..parallel.guard import ModelScreen, guarded, rule_screen
from ..parallel.sectioning import Section, Synthesize, concatenate, json_outputs, merge_json, token_counter
from ..parallel.voting import DEFAULT_TIE, Extractor, VotePrior, low_agreement, sample_params, vote
from ..routing.base import Decision, Router
from .context import Node, RunContext, Suspended, WorkflowError, as_text, current_key, last_escalated, render
from .people import Escalate

__all__ = ["Call", "Escalate", "GuardStep", "OrchestrateStep", "RouteStep", "SectionStep", "VoteStep"]


# -- the steps -------------------------------------------------------------------------------------
@dataclass
class Call(Node):
    """One model call: a prompt template, a system prompt, and the model (a catalog name)."""

    prompt: str = "{input}"
    _: KW_ONLY
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    json_schema: dict[str, Any] | None = None
    name: str = ""
    kind: str = "call"
    response_format: ResponseFormat | None = None  # sent as is, the answer kept as text (a Chain step's)

    def request(self, ctx: RunContext, value: Any) -> Request:
        scope = ctx.scope(value)
        where = f"step {self.name!r}: " if self.name else ""
        temp, seed = self.temperature, None
        if ctx.sample is not None:  # a vote sample: vary the seed, and sample (not greedy) unless told
            temp, seed = sample_params(ctx.sample, temp)
        return Request.of(
            render(self.prompt, scope, where=where), system=render(self.system, scope, where=where) if self.system else None,
            max_tokens=self.max_tokens, temperature=temp, seed=seed,
            response_format=ResponseFormat.json_schema(self.json_schema, self.name or "output") if self.json_schema else self.response_format,
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
class RouteStep(Node):
    """Decide with a router, then run the target of the route chosen (or ``default``)."""

    router: Router | None = None
    targets: Mapping[str, Node] = field(default_factory=dict)
    _: KW_ONLY
    default: Node | None = None
    name: str = ""
    kind: str = "route"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        assert self.router is not None
        memo = current_key() + "#decision"  # a resumed run takes the decision it made, not a new one
        done = ctx.replay.get(memo)
        if done is not None:
            d = Decision(**{**done, "scores": dict(done.get("scores") or {})})
        else:
            d = await self.router.decide(value if isinstance(value, (str, Mapping)) else as_text(value))
        ctx.journal[memo] = d._asdict()
        ctx.decisions.append((self.name or "route", d))
        detail.update(route=d.route, confidence=round(d.confidence, 4), outcome=d.outcome, reason=d.reason[:200])
        target = self.targets.get(d.route) if d.route is not None else None
        target = target or self.default
        if target is None:
            raise WorkflowError(f"step {self.name or 'route'!r}: no target for {d.route or 'an abstention'} ({d.reason}) and no default")
        sub = ctx.branch("t", route=d.route, confidence=round(d.confidence, 4), _decision=d, _targets=self.targets,
                         _router=getattr(self.router, "name", None))
        sub.meter = ctx.meter  # sequential: count straight into this step
        out = await target.run(sub, value)
        ctx.outputs.update(sub.outputs)
        if last_escalated(ctx):
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
    _: KW_ONLY
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
            sub = ctx.branch(f"x{s.index}", section=s.text, title=s.title, index=s.index)

            async def go() -> Any:
                return await mapper.run(sub, s.text)
            return go

        res = await fan_out([branch(s) for s in sections], concurrency=self.concurrency, timeout=self.timeout)
        waiting = next((e.error for e in res.envelopes if isinstance(e.error, Suspended)), None)
        if waiting is not None:  # a section asked a person: the others are in the journal, the run waits
            raise waiting
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
        return await self._aggregate(ctx, value, sections, res.envelopes, outputs, detail)

    async def _aggregate(self, ctx: RunContext, value: Any, sections: list[Section], envelopes: Seq[Any], outputs: list[str | None],
                         detail: dict[str, Any]) -> Any:
        agg = self.aggregate
        if agg == "concatenate":
            wrapped = [e._replace(value=Completion(o or "", "")) if e.ok else e for e, o in zip(envelopes, outputs, strict=True)]
            return concatenate(sections, wrapped)
        if agg == "merge_json":
            parsed, bad = json_outputs([(e.index, e.value) for e in envelopes if e.ok])
            merged, conflicts = merge_json(parsed)
            if bad or conflicts:
                detail.setdefault("conflicts", []).extend(bad + conflicts)
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
    _: KW_ONLY
    extract: Extractor | None = None
    rule: str = "plurality"
    tie: str = DEFAULT_TIE
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
            return as_text(await sample.run(ctx.branch(f"s{i}", _sample=i), value))

        memo = current_key() + "#verdict"  # a resumed run takes the tally it had, not a new vote
        t = ctx.replay.get(memo)
        if t is None:
            kw: dict[str, Any] = {"extract": self.extract} if self.extract is not None else {}
            v = await vote(one, self.n, rule=self.rule, tie=self.tie, early_stop=self.early_stop,  # type: ignore[arg-type]
                           confidence_level=self.confidence_level, prior=self.prior, wave=self.wave, name=self.name or "vote", **kw)
            t = {"answer": v.answer, "agreement": round(v.agreement, 4), "samples_used": v.samples_used, "outcome": v.outcome,
                 "counts": dict(v.counts), "low": self.escalate_below is not None and low_agreement(v, self.escalate_below)}
        ctx.journal[memo] = t
        detail.update(answer=t["answer"], agreement=t["agreement"], samples_used=t["samples_used"], samples_planned=self.n,
                      outcome=t["outcome"])
        if t["low"]:
            detail["escalated"] = True
            if self.escalate is None:
                detail["_status"] = "low_agreement"
                return t["answer"]
            sub = ctx.branch("e", answer=t["answer"], agreement=t["agreement"], _tally=t["counts"])
            sub.meter = ctx.meter
            out = await self.escalate.run(sub, value)
            if last_escalated(ctx):
                detail["_status"] = "escalated"
            return out
        if t["answer"] is None:
            detail["_status"] = "no_answer"
        return t["answer"]


@dataclass
class OrchestrateStep(Node):
    """A planner model splits the task into subtasks (schema-checked JSON), workers run them
    concurrently (routed per subtask when ``router`` is given), a synthesiser combines them."""

    _: KW_ONLY
    planner: str | None = None
    worker: str | None = None
    synthesizer: str | None = None
    max_subtasks: int = 4
    max_depth: int = 1
    concurrency: int = 4
    router: Router | None = None
    route_models: Mapping[str, str] = field(default_factory=dict)
    max_tokens: int | None = 384
    worker_agent: Node | None = None  # an AgentStep doing each subtask with tools, instead of one model call
    name: str = ""
    kind: str = "orchestrate"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        from .orchestrator import Orchestrator

        worker = ctx.model(self.worker) if self.worker_agent is None else _NodeAsModel(self.worker_agent, ctx)
        o = Orchestrator(ctx.model(self.planner), worker, ctx.model(self.synthesizer or self.planner),
                         max_subtasks=self.max_subtasks, max_depth=self.max_depth, concurrency=self.concurrency, router=self.router,
                         models={r: ctx.model(m) for r, m in self.route_models.items()} or None, max_tokens=self.max_tokens)
        res = await o.run(as_text(value))
        detail.update(subtasks=[s.title for s in res.subtasks], failed=len(res.failed), notes=res.notes[:5])
        if res.failed:
            detail["_status"] = "partial"
        return res.final


class _NodeAsModel:
    """A node (an agent) where the orchestrator expects a worker model: each subtask's prompt is its
    input, a branch of the run its context (its calls metered into the run, its tool calls steps)."""

    def __init__(self, node: Node, ctx: RunContext) -> None:
        self.node, self.ctx = node, ctx
        self.name = node.name or node.kind
        from .._types import FREE

        self.price = FREE  # its calls are priced and metered by the models it uses

    async def complete(self, request: Request) -> Completion:
        branch = self.ctx.branch()
        cost0 = branch.meter.cost_usd
        out = await self.node.run(branch, request.messages[-1].content)
        return Completion(as_text(out), self.name, "stop", cost_usd=branch.meter.cost_usd - cost0)

    async def stream(self, request: Request) -> Any:  # pragma: no cover - the orchestrator only completes
        raise NotImplementedError("an agent worker answers whole")

    async def aclose(self) -> None:
        return None


@dataclass
class GuardStep(Node):
    """Answer with ``respond`` while screens check the input; a flag withholds (and cancels) the answer."""

    respond: Call | None = None
    _: KW_ONLY
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
