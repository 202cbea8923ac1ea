"""Prometheus metrics: a sink for ``Traced`` (and for routing decisions) that keeps counters and
histograms in a ``prometheus_client`` registry; the gateway exposes it at ``/metrics``.

``pip install 'turnout[metrics]'``. A registry of its own by default, so tests and several
turnout instances in one process do not collide.
"""

from __future__ import annotations

from typing import Any

from .._errors import ConfigError
from .._scope import current_scope

__all__ = ["Metrics", "Tee"]

from .base import Tee  # noqa: E402  (re-exported: sinks are usually combined with metrics)

_FIXED = frozenset(("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/metrics", "/healthz", "/readyz"))


def endpoint(path: str) -> str:
    """A request path as a label of bounded cardinality (ids and names become placeholders)."""
    if path in _FIXED:
        return path
    for prefix, label in (("/v1/models/", "/v1/models/{id}"), ("/v1/workflows/", "/v1/workflows/{name}/runs"), ("/v1/queue", "/v1/queue"),
                          ("/v1/runs/", "/v1/runs/{id}/feedback" if path.endswith("/feedback") else "/v1/runs/{id}")):
        if path.startswith(prefix):
            return label
    return "other" if path.startswith("/v1/") else "dashboard"


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, registry: Any = None, *, namespace: str = "turnout") -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise ConfigError("metrics need prometheus-client: pip install 'turnout[metrics]'") from None
        self.registry = registry if registry is not None else CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
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
        # by the caller: a gateway key (and its team), from the call's scope
        self.key_tokens = Counter("key_tokens", "Tokens by key, team, model and direction", ["key", "team", "model", "direction"],
                                  namespace=ns, registry=r)
        self.key_cost = Counter("key_cost_usd", "Cost in USD by key, team and model", ["key", "team", "model"], namespace=ns, registry=r)
        # the gateway's requests (turnout.server.access.Observed): labels only from what the server resolved
        self.http_requests = Counter("gateway_requests", "Gateway requests", ["endpoint", "key", "team", "model", "status"],
                                     namespace=ns, registry=r)
        self.http_latency = Histogram("gateway_request_seconds", "Gateway request latency (to the last byte)", ["endpoint", "model"],
                                      namespace=ns, registry=r, buckets=_LATENCY_BUCKETS)
        self.ttft = Histogram("gateway_ttft_seconds", "Time to the first streamed token", ["model"], namespace=ns, registry=r,
                              buckets=_LATENCY_BUCKETS)
        self.escalations = Counter("escalations", "Runs handed to a person", ["queue"], namespace=ns, registry=r)
        self.budget_limit = Gauge("budget_limit_usd", "A budget's limit in its current window", ["budget"], namespace=ns, registry=r)
        self.budget_remaining = Gauge("budget_remaining_usd", "What a budget has left in its current window", ["budget"],
                                      namespace=ns, registry=r)

    def _at(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set: prometheus_client's ``labels``
        validates and locks on every call, several times a request on the gateway's hot path."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record(self, event: Any) -> None:
        """A ``CallEvent`` (this makes Metrics a sink for ``Traced``)."""
        m, at = event.model, self._at
        at(self.requests, m, "ok" if event.ok else (event.error_type or "error")).inc()
        at(self.tokens, m, "input").inc(event.usage.input_tokens)
        at(self.tokens, m, "output").inc(event.usage.output_tokens)
        if event.cost_usd:
            at(self.cost, m).inc(event.cost_usd)
        at(self.latency, m).observe(event.latency_s)
        if event.retries:
            at(self.retries, m).inc(event.retries)
        if event.fallback:
            at(self.fallbacks, m, event.fallback).inc()
        if event.cached:
            at(self.cache_hits, m).inc()
            at(self.cache_saved, m).inc(event.saved_usd)
        sc = current_scope()
        if sc.key is not None:
            team = sc.team or ""
            at(self.key_tokens, sc.key, team, m, "input").inc(event.usage.input_tokens)
            at(self.key_tokens, sc.key, team, m, "output").inc(event.usage.output_tokens)
            at(self.key_cost, sc.key, team, m).inc(event.cost_usd)

    def record_request(self, path: str, rec: dict[str, Any]) -> None:
        """One gateway request's record (``turnout.server.access``): its counts and latencies, the
        routing decisions and escalations it made."""
        ep = endpoint(path)
        model = rec.get("model") or ""
        self._at(self.http_requests, ep, rec.get("key") or "", rec.get("team") or "", model, str(rec["status"])).inc()
        self._at(self.http_latency, ep, model).observe(rec.get("latency_s", 0.0))
        if rec.get("ttft_s") is not None:
            self._at(self.ttft, model).observe(rec["ttft_s"])
        for router, d in rec.get("decisions", ()):
            self.record_decision(d, router=router)
        for queue in rec.get("escalations", ()):
            self.escalations.labels(queue).inc()

    def set_budgets(self, budgets: list[tuple[str, float, float]]) -> None:
        """``(name, limit, spent)`` of each budget in its current window, read when /metrics is scraped."""
        for name, limit, spent in budgets:
            self.budget_limit.labels(name).set(limit)
            self.budget_remaining.labels(name).set(max(0.0, limit - spent))

    def record_decision(self, decision: Any, *, router: str = "", **_: Any) -> None:
        name = router or decision.stage or decision.kind
        self._at(self.decisions, name, str(decision.route), decision.outcome).inc()
        self._at(self.decision_latency, name).observe(decision.latency_s)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
