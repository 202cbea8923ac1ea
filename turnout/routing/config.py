"""Routers from YAML (or a dict): routes, utterances, keywords, regexes, field rules, descriptions,
thresholds, fallback, escalation, and which model and embedder. One spec, the same objects as the
Python API. ``save_fitted`` writes a fitted semantic router's knobs back into the spec.

.. code-block:: yaml

    name: support-triage
    router: cascade            # rule | semantic | llm | cascade
    fallback: general
    escalation: human
    embedder: local-minilm     # a catalog's embedders: name, {type: openai, model: ...}, {type: onnx, path: DIR}
    model: local               # a catalog name, for the LLM stage
    routes:
      billing:
        description: invoices, charges, payment methods
        utterances: ["I was charged twice", ...]
        keywords: [invoice, charged twice]
        fields: [{field: issue_type, op: "==", value: billing}]
      general: {}
      human: {target: {escalation: support-queue}}
    stages:                    # cascade only; default rule -> semantic -> llm where each has material
      - {router: rule, threshold: 1.0}
      - {router: semantic, threshold: 0.6}
      - {router: llm, threshold: 0.5, shortlist: 5}   # the LLM picks among semantic's top 5
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._constants import DEFAULT_EMBEDDER
from .._errors import ConfigError
from .._yaml import line_of, load_model
from ..models.base import ChatModel, Embedder
from ..models.embedder_spec import EmbedderSpec, build_embedder
from .base import Route, Router
from .cascade import CascadeRouter, Stage
from .llm import LLMRouter
from .rules import RuleRouter
from .semantic import SemanticRouter

__all__ = ["RouterSpec", "build_router", "load_router", "load_spec", "save_fitted"]


class _FieldRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    op: Literal["==", "!=", ">", "<", ">=", "<=", "in", "not_in", "contains"] = "=="
    value: Any = None


class _RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    utterances: list[str] = []
    keywords: list[str] = []
    regexes: list[str] = []
    fields: list[_FieldRule] = []
    threshold: float | None = None
    synonyms: list[str] = []
    target: dict[str, Any] = {}


class _SemanticIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scoring: Literal["centroid", "nearest", "hybrid", "probe"] = "centroid"
    temperature: float = Field(0.05, gt=0)
    hybrid_weight: float = Field(0.5, ge=0, le=1)
    description_weight: float = Field(0.0, ge=0, le=2)
    probe_l2: float = Field(0.01, gt=0)
    default_threshold: float = 0.0


class _LLMIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int = Field(1, ge=1, le=32)
    temperature: float | None = Field(None, ge=0, le=2)
    instructions: str = ""
    timeout: float | None = Field(60.0, gt=0)  # per call, not counting the wait for a model slot
    use_logprobs: bool = True
    examples: int = Field(3, ge=0, le=20)  # example utterances per route shown in the prompt
    concurrency: int | None = Field(None, ge=1, le=256)  # decisions in flight (default: the model's slots)


class _StageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    router: Literal["rule", "semantic", "llm"]
    threshold: float = Field(0.5, ge=0, le=1)
    # llm only: choose among the earlier stage's top N routes (their examples only), not all of them
    shortlist: int = Field(0, ge=0, le=64)

    @field_validator("shortlist")
    @classmethod
    def _llm_only(cls, v: int, info: Any) -> int:
        if v and info.data.get("router") != "llm":
            raise ValueError("shortlist is for an llm stage (it narrows the LLM's choice to an earlier stage's best routes)")
        return v


class RouterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "router"
    # no default: a spec that forgot it must not silently become a cascade that calls the LLM
    router: Literal["rule", "semantic", "llm", "cascade"] = Field(
        description="rule, semantic, llm or cascade (rules -> embeddings -> the LLM for what they are unsure of)")
    fallback: str | None = None
    escalation: str | None = None
    escalate_below: float = Field(0.0, ge=0, le=1)
    embedder: str | EmbedderSpec = DEFAULT_EMBEDDER  # a catalog embedders: name, or one described here
    model: str = "local"
    routes: dict[str, _RouteIn]
    semantic: _SemanticIn = _SemanticIn()
    llm: _LLMIn = _LLMIn()
    stages: list[_StageIn] | None = None

    @field_validator("embedder", mode="before")
    @classmethod
    def _one_embedder(cls, v: Any) -> Any:
        """A mapping is an ``EmbedderSpec``; its own error, not the union's "should be a string"."""
        if not isinstance(v, dict):
            return v
        try:
            return EmbedderSpec.model_validate(v)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ValueError(f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None


def _routes(spec: RouterSpec) -> list[Route]:
    return [
        Route(
            name, r.description, tuple(r.utterances), tuple(r.keywords), tuple(r.regexes),
            tuple((f.field, f.op, f.value) for f in r.fields), r.threshold, r.target, tuple(r.synonyms),
        )
        for name, r in spec.routes.items()
    ]


def _local_minilm() -> Embedder:
    from ..models.embedder import LocalEmbedder

    return LocalEmbedder()


# the embedders a router spec's ``embedder:`` may name; ``turnout.testing`` adds "fake" when a test,
# bench or doc imports it (production code never imports the test kit)
EMBEDDERS: dict[str, Callable[[], Embedder]] = {DEFAULT_EMBEDDER: _local_minilm}


def register_embedder(name: str, factory: Callable[[], Embedder]) -> None:
    """Let router specs name another embedder (``embedder: NAME``)."""
    EMBEDDERS[name] = factory


def _embedder(name: str | EmbedderSpec, catalog: Any = None) -> Embedder:
    """A spec's ``embedder:``: a name the catalog declares (under its policies), a registered one, or
    one described inline (under the catalog's policies when there is a catalog)."""
    if isinstance(name, EmbedderSpec):
        return catalog.embedder(name) if catalog is not None else build_embedder(name)  # type: ignore[no-any-return]
    if catalog is not None and catalog.has_embedder(name):
        return catalog.embedder(name)  # type: ignore[no-any-return]
    factory = EMBEDDERS.get(name)
    if factory is None:
        known = set(EMBEDDERS) | set(catalog.embedder_names() if catalog is not None else ())
        raise ConfigError(f"embedder: unknown embedder {name!r}; known: {', '.join(sorted(known))}"
                          + ("" if catalog is not None else " (a catalog's embedders: are known when the router is built with catalog=)"))
    return factory()


def build_router(
    spec: RouterSpec | Mapping[str, Any],
    *,
    model: ChatModel | None = None,
    embedder: Embedder | None = None,
    catalog: Any = None,
) -> Router:
    """Build the router a spec describes. ``model``/``embedder`` override the spec's names; an
    ``llm`` stage without ``model=`` takes the spec's model from ``catalog=`` (which the caller
    owns and closes)."""
    if not isinstance(spec, RouterSpec):
        try:
            spec = RouterSpec.model_validate(spec)
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"router spec: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
    names = list(spec.routes)
    for label, r in (("fallback", spec.fallback), ("escalation", spec.escalation)):
        if r is not None and r not in names:
            raise ConfigError(f"{label}: {r!r} is not one of the routes ({', '.join(names)})")
    routes = _routes(spec)
    pol = {"fallback": spec.fallback, "escalation": spec.escalation}

    def rule() -> RuleRouter:
        return RuleRouter(routes, name="rule", **pol)

    def semantic() -> SemanticRouter:
        s = spec.semantic
        return SemanticRouter(routes, embedder or _embedder(spec.embedder, catalog), scoring=s.scoring, temperature=s.temperature,
                              hybrid_weight=s.hybrid_weight, description_weight=s.description_weight, probe_l2=s.probe_l2,
                              default_threshold=s.default_threshold,
                              escalate_below=spec.escalate_below, name="semantic", **pol)

    def llm() -> LLMRouter:
        m = model
        if m is None:
            if catalog is None:  # no hidden catalog: its models (an embedded LLM) would never be closed
                raise ConfigError(f"an llm router needs its model: pass model= (a ChatModel) or catalog= (to look up "
                                  f"{spec.model!r}), e.g. build_router(spec, catalog=Catalog())")
            m = catalog.model(spec.model)
        s = spec.llm
        return LLMRouter(routes, m, samples=s.samples, temperature=s.temperature, instructions=s.instructions,
                         timeout=s.timeout, use_logprobs=s.use_logprobs, examples=s.examples, concurrency=s.concurrency,
                         escalate_below=spec.escalate_below, name="llm", **pol)

    makers = {"rule": rule, "semantic": semantic, "llm": llm}
    if spec.router != "cascade":
        return makers[spec.router]()
    stages = [Stage(makers[s.router](), s.threshold, s.router, s.shortlist) for s in default_stages(spec)]
    return CascadeRouter(stages, name=spec.name, **pol)


def default_stages(spec: RouterSpec) -> list[_StageIn]:
    """The spec's stages, or the default cascade: each stage that has something to work with."""
    if spec.stages is not None:
        return list(spec.stages)
    out = []
    if any(r.keywords or r.regexes or r.fields for r in spec.routes.values()):
        out.append(_StageIn(router="rule", threshold=1.0))
    if any(r.utterances for r in spec.routes.values()):
        out.append(_StageIn(router="semantic", threshold=0.6))
    out.append(_StageIn(router="llm", threshold=0.5))
    return out


def load_spec(path: str | Path) -> RouterSpec:
    p = Path(path)
    spec, root = load_model(p, RouterSpec, what="router spec", hint="a router spec is a mapping with at least 'routes:'")
    names = list(spec.routes)
    for label in ("fallback", "escalation"):
        r = getattr(spec, label)
        if r is not None and r not in names:
            raise ConfigError(f"{p}:{line_of(root, (label,))}: {label}: {r!r} is not one of the routes ({', '.join(names)})")
    return spec


def load_router(path: str | Path, **kw: Any) -> Router:
    """Build a router from a YAML spec file (errors name file, line and field)."""
    p = Path(path)
    try:
        return build_router(load_spec(p), **kw)
    except ConfigError as e:
        if str(e).startswith(str(p)):
            raise
        raise ConfigError(f"{p}: {e}") from None


def semantic_of(router: Router) -> SemanticRouter | None:
    if isinstance(router, SemanticRouter):
        return router
    if isinstance(router, CascadeRouter):
        for st in router.stages:
            if isinstance(st.router, SemanticRouter):
                return st.router
    return None


def save_fitted(spec: RouterSpec, router: SemanticRouter, path: str | Path, *, shortlist: int | None = None) -> None:
    """Write the spec with the fitted scoring, temperature and per-route thresholds; in a cascade,
    ``shortlist`` (``FitReport.shortlist["k"]``) replaces the size of every stage that shortlists."""
    doc = spec.model_dump(mode="json", exclude_defaults=False)
    s = router.settings()
    doc["semantic"].update({k: s[k] for k in ("scoring", "temperature", "hybrid_weight", "description_weight", "probe_l2")})
    for name, t in s["thresholds"].items():
        doc["routes"][name]["threshold"] = round(float(t), 6)
    if spec.router == "cascade":
        # in a cascade the semantic stage's threshold is its confidence cut; the spec's escalate_below
        # applies to every stage, so the fitted cut goes to the stage
        stages = doc.get("stages") or [s.model_dump() for s in default_stages(spec)]
        for st in stages:
            if st["router"] == "semantic" and router.escalate_below > 0:
                st["threshold"] = round(float(router.escalate_below), 6)
            if shortlist and st.get("shortlist"):  # only where the spec shortlists: fitting sizes it, never adds one
                st["shortlist"] = int(shortlist)
        doc["stages"] = stages
    else:
        doc["escalate_below"] = round(float(router.escalate_below), 6)
    for name, r in router.routes.items():  # examples learnt (fit_from_queue) are kept with the route
        if r.utterances and name in doc["routes"]:
            doc["routes"][name]["utterances"] = list(r.utterances)
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120))
