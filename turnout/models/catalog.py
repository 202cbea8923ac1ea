"""Model specs: names → adapter, endpoint, key variable, prices, context, tags, declared policies —
in Python (``ModelSpec``) or from a catalog file's ``models:`` and ``auto:`` sections
(``read_catalog_file``, errors as file:line: field). The adapters are registered by name
(``ADAPTERS``); the embedded models are ``EMBEDDED``. What governs the models — compliance, budgets,
the policy stack — is ``turnout.policies.catalog.Catalog``, above this layer."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._errors import ConfigError
from .._types import Price
from .._yaml import line_of, load_yaml, located_error
from .base import ChatModel

__all__ = ["ADAPTERS", "EMBEDDED", "PROVIDERS", "AdapterFactory", "ModelSpec", "PolicySpec", "provider_spec", "read_catalog_file",
           "spec_from_yaml"]

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
    cache: Mapping[str, Any] | None = None  # response cache opt-in: ttl, semantic, sampled (turnout.policies.cache)


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
    tools: bool = True  # takes tool definitions (function calling); False: skipped by failover for a request with tools

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
    base = spec.base_url or (os.environ.get("OPENAI_BASE_URL") if trust_env else None) or OPENAI_BASE_URL  # as the openai SDK reads it
    return OpenAICompatible(
        spec.model or spec.name, base_url=base, api_key_env=spec.api_key_env or "OPENAI_API_KEY",
        name=spec.name, price=spec.price, trust_env=trust_env, **kw,
    )


def _anthropic(spec: ModelSpec, trust_env: bool) -> ChatModel:
    from .._constants import ANTHROPIC_BASE_URL
    from .anthropic import AnthropicModel

    kw: dict[str, Any] = dict(spec.options)
    if spec.policies.timeout:
        kw.setdefault("timeout", spec.policies.timeout)
    base = spec.base_url or (os.environ.get("ANTHROPIC_BASE_URL") if trust_env else None) or ANTHROPIC_BASE_URL  # as its SDK reads it
    return AnthropicModel(
        spec.model or spec.name, base_url=base,
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

# ``-m openai/NAME`` with only the provider's usual key set: no catalog file needed for the common
# providers. The endpoint is read when the model is built (OPENAI_BASE_URL, ANTHROPIC_BASE_URL as
# their SDKs read them; OLLAMA_HOST as ollama does). No price is known: calls cost $0 until the
# model is described in a catalog (said once, in the log).
PROVIDERS: Mapping[str, str] = {"openai": "OpenAI (OPENAI_API_KEY; OPENAI_BASE_URL)",
                                "anthropic": "Anthropic (ANTHROPIC_API_KEY; ANTHROPIC_BASE_URL)",
                                "ollama": "a local ollama (OLLAMA_HOST, default 127.0.0.1:11434; no key)"}


def provider_spec(name: str, *, trust_env: bool = True) -> ModelSpec | None:
    """The spec of a provider-prefixed name (``openai/gpt-4o-mini``, ``anthropic/claude-…``,
    ``ollama/llama3.2``), or None for any other name."""
    provider, _, model = name.partition("/")
    if provider not in PROVIDERS or not model:
        return None
    desc = f"{PROVIDERS[provider]} — built-in prefix, no price known (describe it in a catalog for costs and budgets)"
    if provider == "ollama":
        host = (os.environ.get("OLLAMA_HOST") if trust_env else None) or "127.0.0.1:11434"
        base = (host if "://" in host else f"http://{host}").rstrip("/") + "/v1"
        return ModelSpec(name, "openai", model, base_url=base, api_key_env="OLLAMA_API_KEY", options={"require_key": False},
                         region="local", description=desc)
    return ModelSpec(name, provider, model, description=desc)


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


class _CacheIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl: float = Field(3600.0, gt=0, description="seconds an answer is kept")
    semantic: float | None = Field(None, gt=0, le=1, description="cosine similarity a near-identical last user turn must reach")
    sampled: bool = Field(False, description="also cache requests that sample (temperature > 0 or unset)")


class _PoliciesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cache: _CacheIn | None = Field(None, description="response cache opt-in: true, or ttl, semantic, sampled")

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_flag(cls, v: Any) -> Any:
        return {} if v is True else (None if v is False else v)
    retry: _RetryIn = _RetryIn()
    rate_limit: _RateIn | None = None
    fallback: list[str] = []
    cooldown: float = Field(30.0, ge=0)
    timeout: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1)


class ComplexityConfig(BaseModel):
    """How a model router scores difficulty: a router of routers whose routes are the tier names, or
    the built-in feature rules (``thresholds`` between tiers, ``long_chars``, ``hard_words``)."""

    model_config = ConfigDict(extra="forbid")
    router: str | None = Field(None, description="a router of routers: whose routes are the tier names")
    thresholds: list[float] | None = None
    long_chars: int = Field(1200, gt=0)
    hard_words: str | None = Field(None, description="a regex of words that make a request harder")


class ModelRouterConfig(BaseModel):
    """One model router's settings, the same wherever one is declared: a catalog's ``auto:`` section
    (the gateway's ``turnout/auto``) or a workflow's ``model_routers:``. Tiers of model names (lowest
    first; default: the catalog's tiers by price), a preference, the complexity scoring, optional
    categories (a router of routers) with their own tiers, and the failover cooldown.
    ``turnout.routing.model_router.build_model_router`` builds the router from it."""

    model_config = ConfigDict(extra="forbid")
    tiers: dict[str, list[str]] | None = None
    prefer: Literal["cheapest", "fastest", "quality"] = "cheapest"
    min_tier: str | None = None
    complexity: ComplexityConfig = ComplexityConfig()
    category: str | None = Field(None, description="a router of routers: (its routes are categories)")
    categories: dict[str, dict[str, list[str]]] = {}
    cooldown: float = Field(30.0, ge=0)


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
    tools: bool = True


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
            cache=p.cache.model_dump() if p.cache is not None else None,
        ),
        description=m.description, quality=m.quality, latency_ms=m.latency_ms, tools=m.tools,
    )


SECTIONS = ("models", "embedders", "compliance", "budgets", "auto", "cache")


def read_catalog_file(path: str | os.PathLike[str], *, auto: bool = True) -> tuple[Path, Any, Any, list[ModelSpec], Any]:
    """A catalog file read and its model side validated: ``(path, doc, root, specs, auto)``, every
    error as ``file:line: field: message``. The ``compliance:`` and ``budgets:`` sections are left in
    ``doc`` (and ``cache:``) for the policies (``turnout.policies.catalog.Catalog.load``); ``auto`` is the validated
    ``auto:`` section (None without one, or when ``auto=False``)."""
    p = Path(path)
    doc, root = load_yaml(p, what="catalog")
    if not isinstance(doc, dict) or not isinstance(doc.get("models", {}), dict) or not (doc.get("models") or doc.get("embedders")):
        raise ConfigError(f"{p}:1: a catalog file needs a top-level 'models:' mapping of name -> settings (or 'embedders:')")
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{p}:{line_of(root, (unknown[0],))}: {unknown[0]}: unknown section; "
                          f"a catalog has {', '.join(SECTIONS)}")
    auto_doc = None
    if doc.get("auto") is not None and auto:
        try:
            auto_doc = ModelRouterConfig.model_validate(doc["auto"])
        except ValidationError as e:
            raise located_error(p, root, e, ("auto",)) from None
        for where in (("complexity", "router"), ("category",)):
            if (auto_doc.complexity.router if where[0] == "complexity" else auto_doc.category) is not None:
                raise ConfigError(f"{p}:{line_of(root, ('auto', *where))}: auto.{'.'.join(where)}: a catalog has no routers to "
                                  "name; declare this model router in a workflow's model_routers:")
        for t, ms in (auto_doc.tiers or {}).items():
            for m in ms:
                if m not in (doc.get("models") or {}) and m not in {e.name for e in EMBEDDED}:
                    raise ConfigError(f"{p}:{line_of(root, ('auto', 'tiers', t))}: auto.tiers.{t}: unknown model {m!r}")
    specs = []
    for name, body in (doc.get("models") or {}).items():
        try:
            specs.append(spec_from_yaml(str(name), body))
        except ValidationError as e:
            raise located_error(p, root, e, ("models", name)) from None
    return p, doc, root, specs, auto_doc
