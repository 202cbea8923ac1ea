"""The compile function of each step kind: a ``StepIn`` (validated YAML) and its location in, the
node of ``nodes.py`` out, with every cross-field check located (file:line: field). Registered by
kind in ``spec.STEP_KINDS``; a new kind is one function here, its schema in ``spec.StepIn`` and its
node in ``nodes.py``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..parallel import sectioning as sec
from ..parallel import voting as vt
from .context import Node
from .nodes import Call, Escalate, GuardStep, OrchestrateStep, RouteStep, SectionStep, VoteStep
from .people import Approve
from .sequence import Sequence
from .spec import SplitIn, StepIn, SynthIn, _Compiler, load_workflow_spec, step_kind
from .tools import AgentIn, AgentStep, FunctionTool, ToolStep, ToolStepIn, load_function

__all__: list[str] = []


@step_kind("call")
def _call(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    return c.call(s.call, kl, scope, name)  # type: ignore[arg-type]


@step_kind("handler")
def _handler(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    h = c.handler(s.handler, kl, scope)  # type: ignore[arg-type]
    return h if not name else Sequence([h], name=name)


@step_kind("escalate")
def _escalate(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    e = s.escalate
    assert e is not None
    c.check_template(e.message, (*kl, "message"), scope | {"queue"})
    return Escalate(e.queue, message=e.message or Escalate.message, timeout=e.timeout, webhook=e.webhook, name=name)


@step_kind("approve")
def _approve(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    a = s.approve
    assert a is not None
    for f in ("when", "message"):
        c.check_template(getattr(a, f), (*kl, f), scope | {"queue"})
    c.check_template(a.rejected, (*kl, "rejected"), scope | {"queue", "reason"})
    if a.when is not None and not a.when.strip():
        raise c.err((*kl, "when"), "when is empty (leave it out to always ask)")
    return Approve(a.queue, when=a.when, message=a.message or Approve.message, rejected=a.rejected or Approve.rejected,
                   timeout=a.timeout, webhook=a.webhook, name=name)


@step_kind("route")
def _route(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    r = s.route
    assert r is not None
    router = c.router(r.router, (*kl, "router"))
    names = list(router.routes)
    inner = scope | {"route", "confidence"}
    targets = {}
    for route, t in r.routes.items():
        if route not in names:
            raise c.err((*kl, "routes", route), f"{route!r} is not a route of router {r.router!r} ({', '.join(names)})")
        targets[route] = c.target(t, (*kl, "routes", route), inner)
    default = c.target(r.default, (*kl, "default"), inner) if r.default is not None else None
    missing = [n for n in names if n not in targets]
    if missing and default is None:
        raise c.err((*kl, "routes"), f"routes of {r.router!r} with no target here: {', '.join(missing)} — add them or a 'default:'")
    return RouteStep(router, targets, default=default, name=name)


@step_kind("section")
def _section(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    sc = s.section
    assert sc is not None
    split = sc.split if isinstance(sc.split, SplitIn) else SplitIn(by=sc.split)
    if split.by == "tokens" and not split.size:
        raise c.err((*kl, "split", "size"), "split by tokens needs size (tokens per window)")
    if split.by == "tokens" and split.overlap >= (split.size or 0):
        raise c.err((*kl, "split", "overlap"), "overlap must be smaller than size")
    mapper = c.target(sc.map, (*kl, "map"), scope | {"section", "title", "index"})
    agg: Any = sc.aggregate
    if isinstance(agg, SynthIn):
        if "{outputs}" not in agg.synthesize.prompt:
            raise c.err((*kl, "aggregate", "synthesize", "prompt"), "the synthesis prompt must contain {outputs}")
        agg = c.call(agg.synthesize, (*kl, "aggregate", "synthesize"), scope | {"outputs"})
    return SectionStep(splitter(split), mapper, aggregate=agg, name=name, **sc.model_dump(include={"concurrency", "timeout", "context_tokens"}))


@step_kind("vote")
def _vote(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    v = s.vote
    assert v is not None
    sample = c.target(v.sample, (*kl, "sample"), scope)
    extract = c.extractor(v, kl)
    esc = c.target(v.escalate, (*kl, "escalate"), scope | {"answer", "agreement"}) if v.escalate is not None else None
    if esc is not None and v.escalate_below is None:
        raise c.err((*kl, "escalate"), "escalate needs escalate_below (the agreement under which to escalate)")
    if v.prior is not None and v.early_stop != "predictive":
        raise c.err((*kl, "prior"), "a prior is used by early_stop: predictive only")
    return VoteStep(sample, v.n, extract=extract, early_stop=None if v.early_stop == "none" else v.early_stop, confidence_level=v.confidence,
                    escalate=esc, name=name, prior=vt.VotePrior(v.prior.alpha, v.prior.beta) if v.prior else None,
                    **v.model_dump(include={"rule", "tie", "wave", "escalate_below"}))


@step_kind("chain")
def _chain(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    ch = s.chain
    assert ch is not None
    return c.sequence(ch.steps, (*kl, "steps"), scope, name, ch.max_steps)


@step_kind("orchestrate")
def _orchestrate(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    o = s.orchestrate
    assert o is not None
    for f in ("planner", "worker", "synthesizer"):
        c.check_model(getattr(o, f), (*kl, f))
    for rname, m in o.route_models.items():
        c.check_model(m, (*kl, "route_models", rname))
    router = c.router(o.router, (*kl, "router")) if o.router else None
    if o.worker_agent is not None and o.worker is not None:
        raise c.err((*kl, "worker_agent"), "give worker: (a model) or worker_agent: (an agent with tools), not both")
    agent = _agent_node(c, o.worker_agent, (*kl, "worker_agent"), scope, "worker") if o.worker_agent is not None else None
    return OrchestrateStep(router=router, name=name, worker_agent=agent, **o.model_dump(exclude={"router", "worker_agent"}))


@step_kind("guard")
def _guard(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    g = s.guard
    assert g is not None
    if isinstance(g.respond, str):
        h = c.handler(g.respond, (*kl, "respond"), scope)
        if not isinstance(h, Call):
            raise c.err((*kl, "respond"), f"handler {g.respond!r} must be a call to be guarded")
        respond = h
    else:
        respond = c.call(g.respond, (*kl, "respond"), scope)
    if not g.patterns and g.screen_model is None:
        raise c.err(kl, "a guard needs patterns, a screen_model, or both")
    c.check_model(g.screen_model, (*kl, "screen_model"))
    return GuardStep(respond, name=name, **g.model_dump(include={"patterns", "screen_model", "policy", "message"}))


@step_kind("workflow")
def _workflow(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    sub = (c.path.parent / s.workflow).resolve()  # type: ignore[operator]
    if sub in c.stack:
        chain = " -> ".join(str(x.name) for x in (*c.stack, sub))
        raise c.err(kl, f"workflows include each other in a cycle: {chain}")
    spec, root = load_workflow_spec(sub)
    if spec.model_routers or spec.cascades:
        raise c.err(kl, f"{s.workflow}: model_routers/cascades are only read from the top workflow; move them there")
    node = _Compiler(sub, spec, root, models=c.models, embedder=c.embedder, stack=(*c.stack, sub)).root_node()
    node.name = name or spec.name
    return node


def splitter(s: SplitIn) -> Any:
    def split(value: Any, count_tokens: Any = None) -> list[sec.Section]:
        if s.by in ("items", "lines"):
            if isinstance(value, (list, tuple)):
                return sec.split_items(value)
            if isinstance(value, Mapping) and isinstance(value.get("items"), list):
                return sec.split_items(value["items"])
            text = value if isinstance(value, str) else (value.get("text", "") if isinstance(value, Mapping) else str(value))
            return sec.split_items([ln.strip() for ln in text.splitlines() if ln.strip()])
        text = value if isinstance(value, str) else (value.get("text", "") if isinstance(value, Mapping) else json.dumps(value))
        if s.by == "paragraphs":
            return sec.split_paragraphs(text, max_chars=s.max_chars)
        if s.by == "headings":
            return sec.split_headings(text, max_level=s.max_level)
        return sec.split_tokens(text, s.size or 512, overlap=s.overlap, count_tokens=count_tokens)
    split.by_tokens = s.by == "tokens"  # type: ignore[attr-defined]  # SectionStep passes the map model's counter
    return split


def _function_tool(c: _Compiler, name: str, loc: tuple[Any, ...]) -> FunctionTool:
    """The workflow's tool ``name`` (``tools:``), imported once; every reference checked here."""
    t = c.tools.get(name)
    if t is not None:
        return t
    d = c.spec.tools.get(name)
    if d is None:
        raise c.err(loc, f"unknown tool {name!r} (defined under tools: {', '.join(sorted(c.spec.tools)) or 'none'})")
    from .._errors import ConfigError

    try:
        t = c.tools[name] = FunctionTool(load_function(d.function, c.path.parent), name=name, description=d.description,
                                         parameters=d.parameters)
    except ConfigError as e:
        raise c.err(("tools", name, "function"), str(e)) from None
    except Exception as e:  # noqa: BLE001 - a signature pydantic cannot describe, a bad name: located
        raise c.err(("tools", name), f"{type(e).__name__}: {e}") from None
    return t


@step_kind("tool")
def _tool(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    ts = s.tool if isinstance(s.tool, ToolStepIn) else ToolStepIn(name=str(s.tool))
    tool = _function_tool(c, ts.name, (*kl, "name") if isinstance(s.tool, ToolStepIn) else kl)
    if ts.arguments is not None:
        for k, v in ts.arguments.items():
            if isinstance(v, str):
                c.check_template(v, (*kl, "arguments", k), scope)
        templated = any(isinstance(v, str) and "{" in v for v in ts.arguments.values())
        problem = _keys(tool, ts.arguments) if templated else tool.check(ts.arguments)  # templates: their values come at run time
        if problem:
            raise c.err((*kl, "arguments"), f"the arguments do not match tool {ts.name!r}: {problem}")
    return ToolStep(tool, arguments=ts.arguments, name=name)


def _keys(tool: FunctionTool, arguments: dict[str, Any]) -> str | None:
    """Before run time only the names of templated arguments can be checked: unknown or missing ones."""
    props = tool.spec.parameters.get("properties") or {}
    unknown = [k for k in arguments if k not in props]
    missing = [k for k in tool.spec.parameters.get("required") or () if k not in arguments]
    if unknown:
        return f"unknown argument(s) {', '.join(unknown)} (it takes {', '.join(props) or 'none'})"
    return f"missing argument(s) {', '.join(missing)}" if missing else None


@step_kind("agent")
def _agent(c: _Compiler, s: StepIn, kl: tuple[Any, ...], scope: set[str], name: str) -> Node:
    assert s.agent is not None
    return _agent_node(c, s.agent, kl, scope, name)


def _agent_node(c: _Compiler, a: AgentIn, kl: tuple[Any, ...], scope: set[str], name: str) -> AgentStep:
    tools = [_function_tool(c, t, (*kl, "tools", i)) for i, t in enumerate(a.tools)]
    c.check_template(a.prompt, (*kl, "prompt"), scope)
    c.check_template(a.system, (*kl, "system"), scope)
    c.check_model(a.model, (*kl, "model"))
    if a.tool_choice not in ("auto", "required", "none") and a.tool_choice not in a.tools:
        raise c.err((*kl, "tool_choice"), f"{a.tool_choice!r} is not auto, required, none or one of this agent's tools")
    return AgentStep(tools, name=name, **a.model_dump(exclude={"tools"}))
