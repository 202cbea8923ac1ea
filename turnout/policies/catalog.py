"""The model catalog: named model specs (``turnout.models.catalog``: adapters, endpoints, prices,
tags, declared policies) plus the settings that govern them — a compliance policy, budgets, an
audit sink, the gateway's ``auto:`` router — and the ONE place a model's policy stack is composed.

Built in Python (``Catalog([ModelSpec(...)])``) or loaded from YAML (``Catalog.load("models.yaml")``);
the embedded models are always present at price 0. ``catalog.model(name)`` returns the model with
its declared policy stack,
``Traced(ComplianceGate(Cached(Fallback([Budgeted(Retrying(Limited(Capped(Compliant(adapter))))), ...]))))``,
where every caller of one model shares that model's rate limiter, concurrency cap and fallback
cooldowns. The compliance layers are there when the catalog has a data policy (a ``compliance:``
section, or any model declaring ``data_classes`` other than ``["*"]``): then no member of any chain
ever receives a data class it does not declare. ``spend=`` (a ``SpendControl``, or a ``budgets:``
section) charges every call to the budgets that apply to it, and every call is also charged to the
meters of its scope (the gateway's key budgets, ``turnout._scope``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._constants import DEFAULT_EMBEDDER
from .._errors import ConfigError, UnknownModel
from .._yaml import line_of, located_error
from ..models.base import ChatModel
from ..models.catalog import (
    ADAPTERS,
    EMBEDDED,
    PROVIDERS,
    AdapterFactory,
    ModelRouterConfig,
    ModelSpec,
    provider_spec,
    read_catalog_file,
)
from ..models.embedder_spec import EmbedderSpec, build_embedder
from .base import NoTools
from .budget import Budgeted
from .cache import Cached, CacheSettings, ResponseCache
from .cache_backends import open_backend
from .compliance import ComplianceGate, Compliant, DataPolicy, Detector, expand
from .embedding import PolicyEmbedder
from .fallback import Fallback
from .ratelimit import Capped, Limited, MemoryBuckets, RateLimiter
from .retry import Retrying, RetryPolicy, stop_after_attempt, wait_exponential
from .spend import load_budgets
from .trace import Traced

__all__ = ["Catalog"]

log = logging.getLogger(__name__)


class _ComplianceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detect: list[str] | None = Field(None, description="built-in data classes to detect (default: all)")
    custom: dict[str, str] = Field({}, description="data class -> regex")
    allow: list[str] = Field([], description="literal strings or regexes that are not sensitive (false positives)")
    regions: dict[str, list[str]] = Field({}, description="data class -> regions its models must be in")
    redact: list[str] = Field([], description="classes redacted (not refused) when no model may receive them")

    def build(self) -> Any:
        det = Detector(self.detect, custom=self.custom, allow=self.allow)
        return DataPolicy(det, {k: tuple(v) for k, v in self.regions.items()}, expand(self.redact))



class _CacheSectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str = Field("memory", description="memory, store (the trace store), a store URL or path, or a redis:// URL")
    max_entries: int = Field(10_000, ge=1, description="entries a memory cache keeps (LRU)")

    def build(self) -> ResponseCache:
        return ResponseCache(open_backend(self.backend, max_entries=self.max_entries), index_limit=self.max_entries)


def _embedders_section(p: Any, root: Any, doc: Any) -> dict[str, EmbedderSpec]:
    out = {}
    for name, body in (doc.get("embedders") or {}).items():
        try:
            out[str(name)] = EmbedderSpec.model_validate(body or {})
        except ValidationError as e:
            raise located_error(p, root, e, ("embedders", name)) from None
    return out


def _retry_policy(attempts: int, max_delay: float) -> RetryPolicy | None:
    """A model's or an encoder's ``retry:`` settings as a policy (None: one attempt, no retries)."""
    return RetryPolicy(stop=stop_after_attempt(attempts), wait=wait_exponential(max=max_delay)) if attempts > 1 else None


def _section(p: Any, root: Any, doc: Any, name: str, schema: Any) -> Any:
    """A catalog section validated and built; every error as ``file:line: section: message``."""
    try:
        return schema.model_validate(doc[name]).build()
    except ValidationError as e:
        raise located_error(p, root, e, (name,)) from None
    except ConfigError as e:
        raise ConfigError(f"{p}:{line_of(root, (name,))}: {name}: {e}") from None


class Catalog:
    """Named models. ``trust_env=False`` stops adapters reading API keys from the environment.
    ``cache`` (a ``ResponseCache``, or a ``cache:`` section) keeps the answers of the models (and
    callers) that opt in; without one, a model that opts in gets an in-memory cache."""

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
        auto: ModelRouterConfig | Mapping[str, Any] | None = None,
        buckets: Any = None,
        cache: ResponseCache | None = None,
        providers: bool = True,
        embedders: Mapping[str, EmbedderSpec] | None = None,
        base_dir: Any = None,
    ) -> None:
        self._specs: dict[str, ModelSpec] = {}
        # encoders by name (the embedded MiniLM always); built once each, with their policies (embedder())
        self._embedders: dict[str, EmbedderSpec] = {DEFAULT_EMBEDDER: EmbedderSpec(type="local"), **(embedders or {})}
        self._built_embedders: dict[str, Any] = {}
        self.base_dir = base_dir  # where an onnx embedder's relative path: is read from (the catalog file's folder)
        self.providers = providers  # provider-prefixed names (openai/NAME, anthropic/NAME, ollama/NAME) need no entry
        if include_embedded:
            for s in EMBEDDED:
                self._specs[s.name] = s
        for s in specs:
            self._specs[s.name] = s
        self.adapters: dict[str, AdapterFactory] = {**ADAPTERS, **(adapters or {})}
        self.trust_env = trust_env
        self._built: dict[str, ChatModel] = {}
        # ("rate", kind, name, rpm, tpm): its RateLimiter; ("cap", name, n): its semaphore — shared with every
        # copy (extend), so a model has one limit and one cap however many workflows extend the catalog
        self._limiters: dict[Any, Any] = {}
        # the rate limits' token buckets: shared with every copy (extend), so a model has one limit
        self.buckets = buckets if buckets is not None else MemoryBuckets()
        self._fallbacks: dict[str, Any] = {}
        self.spend = spend
        self.audit_sink = audit
        self.cache = cache
        if cache is None and any(sp.policies.cache for sp in self._specs.values()):
            self.cache = ResponseCache(implicit=True)  # a model opts in: in memory unless a cache: section says otherwise
        # the gateway's turnout/auto model router (the catalog's auto: section)
        self.auto = auto if isinstance(auto, ModelRouterConfig) else ModelRouterConfig.model_validate(dict(auto or {}))
        if policy is None and any(tuple(sp.data_classes) != ("*",) for sp in self._specs.values()):
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
        p, doc, root, specs, auto = read_catalog_file(path, auto="auto" not in kw)
        if auto is not None:
            kw["auto"] = auto
        for section, arg, schema in (("compliance", "policy", _ComplianceIn), ("cache", "cache", _CacheSectionIn)):
            if doc.get(section) is not None and arg not in kw:
                kw[arg] = _section(p, root, doc, section, schema)
        if doc.get("budgets") is not None and "spend" not in kw:
            kw["spend"] = load_budgets(doc["budgets"], p, root)
        kw.setdefault("embedders", _embedders_section(p, root, doc))
        kw.setdefault("base_dir", p.parent)
        try:
            return cls(specs, **kw)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None

    def validate(self) -> None:
        for s in self._specs.values():
            if s.adapter not in self.adapters:
                raise ConfigError(f"model {s.name!r}: unknown adapter {s.adapter!r}; known: {', '.join(sorted(self.adapters))}")
            for fb in s.policies.fallback:
                if fb not in self:
                    raise ConfigError(f"model {s.name!r}: fallback {fb!r} is not in the catalog; known: {', '.join(sorted(self._specs))}")
                if fb == s.name:
                    raise ConfigError(f"model {s.name!r}: a model cannot fall back to itself")

    # -- lookup -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def spec(self, name: str) -> ModelSpec:
        sp = self._specs.get(name)
        if sp is not None:
            return sp
        sp = provider_spec(name, trust_env=self.trust_env) if self.providers else None
        if sp is None:
            raise UnknownModel(name, list(self._specs), [f"{p}/NAME" for p in PROVIDERS] if self.providers else None)
        log.warning("model %s: no price known, its calls are counted at $0 (describe it in a catalog for costs and budgets)", name)
        self._specs[name] = sp  # built once, like a catalog entry
        return sp

    def __contains__(self, name: object) -> bool:
        if name in self._specs:
            return True
        return self.providers and isinstance(name, str) and provider_spec(name) is not None

    def extend(self, specs: Iterable[ModelSpec]) -> Catalog:
        """A copy with more (or replaced) models that keeps every setting of this catalog: adapters,
        trust_env, the compliance policy, budgets, audit sink and ``auto:``. The one way a catalog is
        copied (a workflow's own ``models:`` section extends its ``catalog:`` with this)."""
        cat = Catalog([*self._specs.values(), *specs], include_embedded=False, adapters=self.adapters, trust_env=self.trust_env,
                       policy=self.policy, spend=self.spend, audit=self.audit_sink, auto=self.auto, buckets=self.buckets,
                       cache=self.cache, providers=self.providers, embedders=self._embedders, base_dir=self.base_dir)
        cat._limiters = self._limiters
        return cat

    def share(self, accounts: Any, buckets: Any) -> None:
        """Keep this catalog's budgets in ``accounts`` and its rate limits in ``buckets`` (Redis: one
        limit for every gateway replica; the Ray gate: for every worker of a batch), models built
        already included. The catalog's copies (``extend``) share its budgets; give them ``share`` too."""
        if self.spend is not None:
            self.spend.share(accounts)
        self.buckets = buckets
        for lim in self._limiters.values():
            if isinstance(lim, RateLimiter):
                lim.share(buckets)

    def use_cache(self, cache: ResponseCache, *, store: Any = None) -> None:
        """Keep answers in ``cache`` (the gateway's: in Redis with ``--redis``) unless this catalog has a
        ``cache:`` section of its own; models built from now on use it (so callers who opt in are served).
        A ``cache: {backend: store}`` section without a URL keeps its entries in ``store`` (the gateway's)."""
        if self.cache is None or self.cache.implicit:
            self.cache = cache
        bind = getattr(self.cache.backend, "bind", None)
        if bind is not None and store is not None:
            bind(store)

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
        spec = self.spec(name)
        m: ChatModel = self.adapter(name)
        if self.policy is not None:
            m = Compliant(m, data_classes=spec.data_classes, region=spec.region, policy=self.policy, sink=self.audit_sink, name=name)
        pol = spec.policies
        if pol.max_concurrency:
            key = ("cap", name, pol.max_concurrency)
            sem = self._limiters.get(key)
            if sem is None:
                sem = self._limiters[key] = asyncio.Semaphore(pol.max_concurrency)
            m = Capped(m, sem)
        lim = self._rate_limiter("model", name, pol.rpm, pol.tpm)
        if lim is not None:
            m = Limited(m, lim)
        retry = _retry_policy(pol.retry_attempts, pol.retry_max_delay)
        if retry is not None:
            m = Retrying(m, retry)
        # per member, so a fallback is charged at its own price: the catalog's budgets (if any) and the
        # meters of the call's scope (a gateway key's budget) — without either it passes calls through
        m = Budgeted(m, self.spend)
        return m if spec.tools else NoTools(m)  # refused before anything is reserved

    def model(self, name: str, *, sink: Any = None, ledger: Any = None, trace: bool = True) -> ChatModel:
        """The named model with its declared policies; traced to ``sink`` and charged to ``ledger`` if given.
        ``trace=False`` leaves the outer ``Traced`` off, for a caller that wraps the model and traces the
        whole (the Ray workers' gate), so each call is recorded once."""
        spec = self.spec(name)
        m = self._with_own_policies(name)
        if spec.policies.fallback:
            fb_chain = self._fallbacks.get(name)  # one per name, so every caller shares the cooldowns
            if fb_chain is None:
                members = [m, *(self._with_own_policies(fb) for fb in spec.policies.fallback)]
                fb_chain = self._fallbacks[name] = Fallback(members, cooldown=spec.policies.cooldown, name=name)
            m = fb_chain
        if self.cache is not None:  # inside the compliance gate: a refused request never reaches the cache
            m = Cached(m, self.cache, CacheSettings.of(spec.policies.cache, f"model {name}: policies.cache"),
                       classes=self.classes_of if self.policy is not None else None)
        if self.policy is not None:
            members = [name, *spec.policies.fallback]
            m = ComplianceGate(m, [(n, self.spec(n).data_classes, self.spec(n).region) for n in members], policy=self.policy,
                               sink=self.audit_sink)
        if ledger is not None:
            m = Budgeted(m, ledger)
        return Traced(m, sink) if trace else m  # no sink: still recorded into the active run's store, if any

    # -- embedders --------------------------------------------------------------------------------
    def embedder_names(self) -> list[str]:
        return list(self._embedders)

    def has_embedder(self, name: str) -> bool:
        return name in self._embedders

    def embedder(self, name: str | EmbedderSpec) -> Any:
        """The named encoder (or one described inline, as a router spec may) under the catalog's
        policies: its compliance (``data_classes``/``region``), the budgets, its rate limit and
        retries. Built once per name and shared, like a model."""
        if isinstance(name, EmbedderSpec):
            key, spec = f"inline:{name.model_dump_json()}", name
        else:
            spec = self._embedders.get(name)  # type: ignore[assignment]
            if spec is None:
                raise ConfigError(f"unknown embedder {name!r}; the catalog has {', '.join(sorted(self._embedders))}")
            key = name
        e = self._built_embedders.get(key)
        if e is None:
            e = self._built_embedders[key] = self._with_embedder_policies(spec, name if isinstance(name, str) else None)
        return e

    def _with_embedder_policies(self, spec: EmbedderSpec, name: str | None) -> Any:
        inner = build_embedder(spec, trust_env=self.trust_env, base_dir=self.base_dir)
        if not spec.remote and self.policy is None:
            return inner  # an in-process encoder, nothing to charge, limit or refuse
        pol = spec.policies
        rate = pol.rate_limit
        lim = self._rate_limiter("embedder", name or inner.name, rate.rpm, rate.tpm) if rate is not None else None
        retry = _retry_policy(pol.retry.attempts, pol.retry.max_delay)
        return PolicyEmbedder(inner, retry=retry, limiter=lim, spend=self.spend, policy=self.policy, data_classes=spec.data_classes,
                              region=spec.region, audit_sink=self.audit_sink, provider="openai" if spec.remote else "onnx",
                              concurrency=pol.max_concurrency, label=name)

    def _rate_limiter(self, kind: str, name: str, rpm: float | None, tpm: float | None) -> RateLimiter | None:
        """The one ``RateLimiter`` of a model or encoder (None without a limit), shared with every copy (extend)."""
        if not (rpm or tpm):
            return None
        key = ("rate", kind, name, rpm, tpm)
        lim = self._limiters.get(key)
        if lim is None:
            lim = self._limiters[key] = RateLimiter(rpm=rpm, tpm=tpm, buckets=self.buckets, name=f"rate:{kind}:{name}")
        return lim  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        built, self._built = self._built, {}
        for m in built.values():
            await m.aclose()
        embedders, self._built_embedders = dict(self._built_embedders), {}
        for e in embedders.values():
            close = getattr(e, "aclose", None)
            if close is not None:
                await close()


