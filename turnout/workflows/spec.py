"""Workflows as YAML: validated with pydantic, compiled to the node objects of ``turnout.workflows.nodes``
(one implementation, two doors). Every error names the file, the line and the field, and is raised
before any model is called.

.. code-block:: yaml

    name: support-triage
    models: {}                      # extra catalog entries (same fields as a catalog file), optional
    catalog: models.yaml            # or a catalog file, optional
    routers: {triage: {file: router.yaml}}   # or an inline router spec
    handlers: {billing: {call: {system: "You handle billing.", prompt: "{input}", max_tokens: 200}}}
    steps:
      - name: answer
        route:
          router: triage
          routes: {billing: billing, human: {escalate: {queue: support}}}
          default: {call: {prompt: "{input}"}}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._errors import ConfigError
from .._yaml import line_of, load_model, located_error
from ..models.base import ChatModel, Embedder
from ..models.catalog import ModelRouterConfig
from ..parallel import voting as vt
from .context import Node, template_names
from .nodes import Call
from .sequence import Sequence, StepGate
from .tools import AgentIn, FunctionTool, ToolDefIn, ToolStepIn

__all__ = ["Models", "WorkflowSpec", "compile_workflow", "load_workflow_spec"]

_KINDS = ("call", "handler", "route", "section", "vote", "chain", "orchestrate", "guard", "escalate", "approve", "workflow", "tool", "agent")


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallIn(_Base):
    prompt: str = "{input}"
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    json_schema: dict[str, Any] | None = None


class EscalateIn(_Base):
    queue: str = "human"
    message: str | None = None
    timeout: float | None = Field(None, gt=0, description="seconds until the item expires unresolved")
    webhook: str | None = Field(None, description="a URL POSTed each new item (else TURNOUT_QUEUE_WEBHOOK)")


class ApproveIn(EscalateIn):  # when: e.g. "{input.amount} > 100" (always asks without it); rejected: a template with {reason}
    queue: str = "approvals"
    when: str | None = None
    rejected: str | None = None


class GateIn(_Base):
    regex: str | None = None
    contains: str | None = None
    not_contains: str | None = None
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    json_: bool = Field(False, alias="json")
    divert: str | None = None
    message: str | None = None


class RouteIn(_Base):
    router: str
    routes: dict[str, StepIn | str] = {}
    default: StepIn | str | None = None


class SplitIn(_Base):
    by: Literal["items", "lines", "paragraphs", "headings", "tokens"] = "paragraphs"
    size: int | None = Field(None, gt=0, description="tokens per window (by: tokens)")
    overlap: int = Field(0, ge=0)
    max_chars: int | None = Field(None, gt=0, description="merge neighbouring paragraphs up to this size")
    max_level: int = Field(6, ge=1, le=6)


class SynthIn(_Base):
    synthesize: CallIn


class SectionIn(_Base):
    split: SplitIn | Literal["items", "lines", "paragraphs", "headings"] = "paragraphs"
    map: StepIn | str
    aggregate: Literal["concatenate", "merge_json", "count"] | SynthIn = "concatenate"
    concurrency: int = Field(4, ge=1, le=256)
    timeout: float | None = Field(None, gt=0)
    context_tokens: int = Field(4096, gt=0)


class PriorIn(_Base):
    alpha: float = Field(gt=0, description="Beta prior on the leading answer's share (turnout vote prior prints one)")
    beta: float = Field(gt=0)


class VoteIn(_Base):
    sample: StepIn | str
    n: int = Field(5, ge=1, le=64)
    extract: Literal["text", "number", "label", "json", "regex"] = "text"
    labels: list[str] = []
    field: str | None = None
    pattern: str | None = None
    rule: Literal["plurality", "majority", "unanimity"] | float = "plurality"
    tie: Literal["escalate", "first_seen", "weight_order"] = vt.DEFAULT_TIE
    early_stop: Literal["decided", "beta", "predictive", "none"] = "decided"
    confidence: float = Field(0.95, gt=0, lt=1)
    wave: int = Field(2, ge=1)
    escalate_below: float | None = Field(None, ge=0, le=1)
    escalate: StepIn | str | None = None
    prior: PriorIn | None = None


class ChainIn(_Base):
    steps: list[StepIn] = Field(min_length=1)
    max_steps: int = Field(20, ge=1)


class OrchestrateIn(_Base):
    planner: str | None = None
    worker: str | None = None
    synthesizer: str | None = None
    max_subtasks: int = Field(4, ge=1, le=32)
    max_depth: int = Field(1, ge=1, le=3)
    concurrency: int = Field(4, ge=1)
    router: str | None = None
    route_models: dict[str, str] = {}
    max_tokens: int | None = Field(384, gt=0)
    worker_agent: AgentIn | None = Field(None, description="each subtask done by an agent with tools (instead of worker:)")


class GuardIn(_Base):
    respond: CallIn | str
    patterns: list[str] = []
    screen_model: str | None = None
    policy: str | None = None
    message: str = "Sorry, I can't help with that request."


class StepIn(_Base):
    name: str | None = None
    gate: GateIn | None = None
    call: CallIn | None = None
    handler: str | None = None
    route: RouteIn | None = None
    section: SectionIn | None = None
    vote: VoteIn | None = None
    chain: ChainIn | None = None
    orchestrate: OrchestrateIn | None = None
    guard: GuardIn | None = None
    escalate: EscalateIn | None = None
    approve: ApproveIn | None = None
    workflow: str | None = None
    tool: ToolStepIn | str | None = None
    agent: AgentIn | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(f"unknown step kind or key {unknown[0]!r} (a step is one of: {', '.join(_KINDS)}; "
                                 "with optional name and gate)")
        elif data is not None and not isinstance(data, StepIn):
            raise ValueError(f"a step is a mapping like {{call: {{prompt: ...}}}}, not {type(data).__name__}")
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> StepIn:
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else ", ".join(given)
            raise ValueError(f"a step has exactly one of {', '.join(_KINDS)} (got {what})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) is not None)


class RouterRef(_Base):
    file: str


class CascadeTierIn(_Base):
    model: str
    samples: int = Field(3, ge=1, le=64)
    threshold: float = Field(0.6, ge=0, le=1)


class CascadeIn(_Base):
    tiers: list[CascadeTierIn] = Field(min_length=1)
    extract: Literal["text", "number", "label", "json", "regex"] = "text"
    labels: list[str] = []
    field: str | None = None
    pattern: str | None = None
    temperature: float = Field(0.7, ge=0)
    wave: int = Field(2, ge=1)


class WorkflowSpec(_Base):
    name: str
    description: str = ""
    catalog: str | None = None
    models: dict[str, dict[str, Any]] = {}
    default_model: str = "local"
    routers: dict[str, RouterRef | dict[str, Any]] = {}
    model_routers: dict[str, ModelRouterConfig] = Field({}, description="names usable as models: routed per request")
    cascades: dict[str, CascadeIn] = Field({}, description="names usable as models: agreement-gated escalation")
    handlers: dict[str, StepIn] = {}
    tools: dict[str, ToolDefIn] = Field({}, description="Python functions steps and agents may call, by name")
    steps: list[StepIn] = Field(min_length=1)
    output: str | None = None
    example: str | None = Field(None, description="a sample input (turnout run WF.yaml with no --input uses it)")


for _m in (RouteIn, SectionIn, VoteIn, ChainIn, StepIn, WorkflowSpec):
    _m.model_rebuild()


def load_workflow_spec(path: str | Path) -> tuple[WorkflowSpec, Any]:
    return load_model(path, WorkflowSpec, what="workflow", hint="a workflow is a mapping with at least 'name:' and 'steps:'")


_BASE_VARS = {"input", "original", "steps"}


# kind -> compile(compiler, step, location, template scope, name) -> Node; filled by kinds.py
STEP_KINDS: dict[str, Callable[..., Node]] = {}


def step_kind(kind: str) -> Callable[[Callable[..., Node]], Callable[..., Node]]:
    """Register the compile function of a step kind (see ``kinds.py``)."""
    def register(fn: Callable[..., Node]) -> Callable[..., Node]:
        STEP_KINDS[kind] = fn
        return fn
    return register


@dataclass(frozen=True)
class Models:
    """The models a workflow may name, in one value: the catalog they come from (with its settings:
    compliance, budgets, limits), how a name becomes a model (given overrides first) and every name
    that may be used (catalog names, overrides, the workflow's model routers and cascades)."""

    catalog: Any
    resolve: Callable[[str], ChatModel]
    known: frozenset[str]

    def with_names(self, names: Iterable[str]) -> Models:
        return replace(self, known=self.known | frozenset(names))


class _Compiler:
    def __init__(self, path: Path, spec: WorkflowSpec, root: Any, *, models: Models, embedder: Embedder | None,
                 stack: tuple[Path, ...]) -> None:
        self.path, self.spec, self.root = path, spec, root
        self.models, self.embedder = models, embedder
        self.stack = stack
        self.handler_nodes: dict[str, Node] = {}
        self.handler_stack: list[str] = []
        self.routers: dict[str, Any] = {}
        self.tools: dict[str, FunctionTool] = {}
        self.step_names: set[str] = set()
        self._collect_names(spec)

    def err(self, loc: tuple[Any, ...], msg: str) -> ConfigError:
        where = ".".join(str(x) for x in loc)
        return ConfigError(f"{self.path}:{line_of(self.root, loc)}: {where}: {msg}")

    def _collect_names(self, spec: WorkflowSpec) -> None:
        def walk(obj: Any) -> None:
            if isinstance(obj, StepIn) and obj.name:
                self.step_names.add(obj.name)
            if isinstance(obj, BaseModel):
                for k in type(obj).model_fields:
                    walk(getattr(obj, k))
            elif isinstance(obj, dict):
                for v in obj.values():
                    walk(v)
            elif isinstance(obj, list):
                for v in obj:
                    walk(v)
        walk(spec.steps)
        walk(spec.handlers)

    # -- checks ------------------------------------------------------------------------------------
    def check_template(self, text: str | None, loc: tuple[Any, ...], scope: set[str]) -> None:
        if not text:
            return
        for name in template_names(text):
            parts = name.split(".")
            if parts[0] not in scope:
                raise self.err(loc, f"template variable {{{name}}} is not defined here (known: {', '.join(sorted(scope))})")
            if parts[0] == "steps" and (len(parts) < 2 or parts[1] not in self.step_names):
                raise self.err(loc, f"template variable {{{name}}} names no step of this workflow "
                                    f"(named steps: {', '.join(sorted(self.step_names)) or 'none'})")

    def check_model(self, name: str | None, loc: tuple[Any, ...]) -> None:
        if name is not None and name not in self.models.known:
            raise self.err(loc, f"unknown model {name!r} (known: {', '.join(sorted(self.models.known))})")

    # -- building ----------------------------------------------------------------------------------
    def router(self, name: str, loc: tuple[Any, ...]) -> Any:
        if name in self.routers:
            return self.routers[name]
        if name not in self.spec.routers:
            raise self.err(loc, f"unknown router {name!r} (defined: {', '.join(sorted(self.spec.routers)) or 'none'})")
        from ..routing.config import RouterSpec, build_router, load_spec

        ref = self.spec.routers[name]
        rloc: tuple[Any, ...] = ("routers", name)
        if isinstance(ref, RouterRef):
            rpath = (self.path.parent / ref.file)
            rspec = load_spec(rpath)
        else:
            try:
                rspec = RouterSpec.model_validate({"name": name, **ref})
            except ValidationError as e:
                raise located_error(self.path, self.root, e, rloc) from None
        if rspec.router in ("llm", "cascade"):
            self.check_model(rspec.model, (*rloc, "model"))
        try:
            r = build_router(rspec, embedder=self.embedder, catalog=self.models.catalog,
                             model=self.models.resolve(rspec.model) if rspec.router in ("llm", "cascade") else None)
        except ConfigError as e:
            raise self.err(rloc, str(e)) from None
        if r.name in ("rule", "semantic", "llm"):  # a single-kind router is named after its kind: name it as the workflow does
            r.name = name
        self.routers[name] = r
        return r

    def handler(self, name: str, loc: tuple[Any, ...], scope: set[str]) -> Node:
        if name not in self.spec.handlers:
            raise self.err(loc, f"unknown handler {name!r} (defined: {', '.join(sorted(self.spec.handlers)) or 'none'})")
        if name in self.handler_stack:
            cycle = " -> ".join([*self.handler_stack[self.handler_stack.index(name):], name])
            raise self.err(("handlers", name), f"handlers refer to each other in a cycle: {cycle}")
        if name not in self.handler_nodes:
            self.handler_stack.append(name)
            try:
                node = self.step(self.spec.handlers[name], ("handlers", name), scope | {"route", "confidence", "section", "title",
                                                                                        "index", "answer", "agreement"})
            finally:
                self.handler_stack.pop()
            if not node.name:
                node.name = name
            self.handler_nodes[name] = node
        return self.handler_nodes[name]

    def target(self, t: StepIn | str, loc: tuple[Any, ...], scope: set[str]) -> Node:
        return self.handler(t, loc, scope) if isinstance(t, str) else self.step(t, loc, scope)

    def call(self, c: CallIn, loc: tuple[Any, ...], scope: set[str], name: str = "") -> Call:
        self.check_template(c.prompt, (*loc, "prompt"), scope)
        self.check_template(c.system, (*loc, "system"), scope)
        self.check_model(c.model, (*loc, "model"))
        return Call(name=name, **c.model_dump())

    def step(self, s: StepIn, loc: tuple[Any, ...], scope: set[str]) -> Node:
        """The node of one step, by its kind's compile function (``STEP_KINDS``, filled by ``kinds.py``)."""
        node = STEP_KINDS[s.kind](self, s, (*loc, s.kind), scope, s.name or "")
        if s.gate is not None:
            node = self.gated(node, s, loc)
        return node

    def gated(self, node: Node, s: StepIn, loc: tuple[Any, ...]) -> Node:
        # a gate outside a chain: a one-step chain that stops with the gate's message
        g = s.gate
        assert g is not None
        if g.divert is not None:
            raise self.err((*loc, "gate", "divert"), "divert works only for steps inside a chain (steps: or chain:)")
        if not node.name:
            node.name = f"gated-{node.kind}"
        return Sequence([node], gates={node.name: _gate(g)}, name="")

    def sequence(self, steps: list[StepIn], loc: tuple[Any, ...], scope: set[str], name: str, max_steps: int = 20) -> Sequence:
        nodes, gates = [], {}
        names = [s.name for s in steps if s.name]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise self.err(loc, f"duplicate step names: {', '.join(sorted(dup))}")
        for i, s in enumerate(steps):
            gate = s.gate
            node = self.step(s.model_copy(update={"gate": None}), (*loc, i), scope)
            if gate is not None:
                if gate.divert is not None and gate.divert not in names:
                    raise self.err((*loc, i, "gate", "divert"), f"divert to {gate.divert!r}: no step of that name in this chain "
                                                                f"({', '.join(names) or 'none named'})")
                if not node.name:
                    node.name = f"step{i + 1}"
                self.check_template(gate.message, (*loc, i, "gate", "message"), scope | {"reason"})
                gates[node.name] = _gate(gate)
            nodes.append(node)
        return Sequence(nodes, gates=gates, max_steps=max_steps, name=name)

    def virtual_models(self, base_resolve: Any) -> dict[str, Any]:
        """The workflow's model routers and cascades, by name (each usable wherever a model is)."""
        from ..routing.escalation import EscalationCascade, Tier
        from ..routing.model_router import build_model_router

        out: dict[str, Any] = {}
        for name, mr in self.spec.model_routers.items():
            loc: tuple[Any, ...] = ("model_routers", name)
            if self.models.catalog is not None and name in self.models.catalog:
                raise self.err(loc, f"{name!r} is also a catalog model; give the model router another name")
            for t, ms in (mr.tiers or {}).items():
                for i, m in enumerate(ms):
                    self.check_model(m, (*loc, "tiers", t, i))
            complexity = self.router(mr.complexity.router, (*loc, "complexity", "router")) if mr.complexity.router else None
            category = self.router(mr.category, (*loc, "category")) if mr.category is not None else None
            try:
                r = build_model_router(mr, self.models.catalog, name=name, resolve=base_resolve, complexity=complexity, category=category)
            except ConfigError as e:
                raise self.err(loc, str(e)) from None
            out[name] = r.as_model()
        for name, cs in self.spec.cascades.items():
            loc = ("cascades", name)
            for i, t in enumerate(cs.tiers):
                if t.model not in out:
                    self.check_model(t.model, (*loc, "tiers", i, "model"))
            extract = self.extractor(cs, loc)  # type: ignore[arg-type]

            def res(m: str, _virtual: dict[str, Any] = out) -> Any:
                return _virtual[m] if m in _virtual else base_resolve(m)

            c = EscalationCascade([Tier(t.model, t.samples, t.threshold) for t in cs.tiers], catalog=self.models.catalog, extract=extract,
                                  temperature=cs.temperature, wave=cs.wave, resolve=res, name=name)
            out[name] = c.as_model()
        return out

    def extractor(self, v: VoteIn, loc: tuple[Any, ...]) -> vt.Extractor:
        if v.extract == "number":
            return vt.extract_number
        if v.extract == "label":
            if not v.labels:
                raise self.err((*loc, "labels"), "extract: label needs labels: [...]")
            return vt.extract_label(v.labels)
        if v.extract == "json":
            if not v.field:
                raise self.err((*loc, "field"), "extract: json needs field: (a dotted path)")
            return vt.extract_json_field(v.field)
        if v.extract == "regex":
            if not v.pattern:
                raise self.err((*loc, "pattern"), "extract: regex needs pattern:")
            try:
                return vt.extract_regex(v.pattern)
            except Exception as e:  # noqa: BLE001 - a bad regex, said with its place
                raise self.err((*loc, "pattern"), f"not a valid regex: {e}") from None
        return vt.extract_text

    def root_node(self) -> Sequence:
        return self.sequence(self.spec.steps, ("steps",), set(_BASE_VARS), self.spec.name)


def _gate(g: GateIn) -> StepGate:
    return StepGate(is_json=g.json_, **g.model_dump(exclude={"json_"}))


def compile_workflow(path: Path, spec: WorkflowSpec, root: Any, *, models: Models, embedder: Embedder | None = None,
                     virtual: dict[str, Any] | None = None) -> Sequence:
    """The workflow's root node (a ``Sequence``); raises ConfigError with file:line: field on any problem.
    ``virtual`` receives the workflow's model routers and cascades (names usable as models)."""
    c = _Compiler(path, spec, root, models=models.with_names([*spec.model_routers, *spec.cascades]), embedder=embedder,
                  stack=(path.resolve(),))
    if spec.model_routers or spec.cascades:
        if models.catalog is None:  # Workflow.load always passes one; no hidden catalog whose models nobody closes
            raise ConfigError(f"{path}: model_routers/cascades need the catalog their models come from (Models.catalog)")
        built = c.virtual_models(models.resolve)
        if virtual is not None:
            virtual.update(built)
    node = c.root_node()
    if spec.output:
        c.check_template(spec.output, ("output",), set(_BASE_VARS))
    for h in spec.handlers:  # a handler nobody uses is still checked
        c.handler(h, ("handlers", h), set(_BASE_VARS))
    return node


ModelMap = Mapping[str, ChatModel]


from . import kinds as _kinds  # noqa: E402,F401 - registers the step kinds (it imports this module)
