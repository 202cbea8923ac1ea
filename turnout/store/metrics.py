"""Prometheus metrics: a sink for ``Traced`` (and for routing decisions) that keeps counters and
histograms in a ``prometheus_client`` registry; the gateway exposes it at ``/metrics``.

``pip install 'turnout[metrics]'``. A registry of its own by default, so tests and several
turnout instances in one process do not collide.
"""

from __future__ import annotations

from typing import Any

from .._errors import ConfigError

__all__ = ["Metrics", "Tee"]

from .base import Tee  # noqa: E402  (re-exported: sinks are usually combined with metrics)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, registry: Any = None, *, namespace: str = "turnout") -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError:
            raise ConfigError("metrics need prometheus-client: pip install 'turnout[metrics]'") from None
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, namespace
        self.requests = Counter("model_requests", "Model calls", ["model", "outcome"], namespace=ns, registry=r)
        self.tokens = Counter("model_tokens", "Tokens by direction", ["model", "direction"], namespace=ns, registry=r)
        self.cost = Counter("model_cost_usd", "Cost in USD", ["model"], namespace=ns, registry=r)
        self.latency = Histogram("model_latency_seconds", "Model call latency", ["model"], namespace=ns, registry=r,
                                 buckets=_LATENCY_BUCKETS)
        self.retries = Counter("model_retries", "Retries made", ["model"], namespace=ns, registry=r)
        self.fallbacks = Counter("model_fallbacks", "Calls answered by a fallback model", ["model", "fallback"], namespace=ns, registry=r)
        self.cache_hits = Counter("model_cache_hits", "Calls answered from the response cache", ["model"], namespace=ns, registry=r)
        self.cache_saved = Counter("model_cache_saved_usd", "USD the cached answers cost when they were made", ["model"],
                                   namespace=ns, registry=r)
        self.decisions = Counter("routing_decisions", "Routing decisions", ["router", "route", "outcome"], namespace=ns, registry=r)
        self.decision_latency = Histogram("routing_decision_seconds", "Routing decision latency", ["router"], namespace=ns,
                                          registry=r, buckets=(1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))

    def record(self, event: Any) -> None:
        """A ``CallEvent`` (this makes Metrics a sink for ``Traced``)."""
        m = event.model
        self.requests.labels(m, "ok" if event.ok else (event.error_type or "error")).inc()
        self.tokens.labels(m, "input").inc(event.usage.input_tokens)
        self.tokens.labels(m, "output").inc(event.usage.output_tokens)
        if event.cost_usd:
            self.cost.labels(m).inc(event.cost_usd)
        self.latency.labels(m).observe(event.latency_s)
        if event.retries:
            self.retries.labels(m).inc(event.retries)
        if event.fallback:
            self.fallbacks.labels(m, event.fallback).inc()
        if event.cached:
            self.cache_hits.labels(m).inc()
            self.cache_saved.labels(m).inc(event.saved_usd)

    def record_decision(self, decision: Any, *, router: str = "", **_: Any) -> None:
        name = router or decision.stage or decision.kind
        self.decisions.labels(name, str(decision.route), decision.outcome).inc()
        self.decision_latency.labels(name).observe(decision.latency_s)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
