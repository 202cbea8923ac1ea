"""OpenTelemetry spans: one span per model call (GenAI semantic conventions) and per routing
decision, emitted through the OpenTelemetry API with whatever SDK/exporter the application set up
(nothing is configured here). ``pip install 'turnout[otel]'``.
"""

from __future__ import annotations

from typing import Any

from .._errors import ConfigError

__all__ = ["OTelSink"]


class OTelSink:
    """A sink for ``Traced`` and for decisions. Spans are recorded after the fact with the call's own
    start and end times, so tracing adds no work to the call itself."""

    def __init__(self, tracer_provider: Any = None, *, system: str = "turnout") -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ConfigError("OpenTelemetry spans need opentelemetry-api: pip install 'turnout[otel]'") from None
        self._trace = trace
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("turnout")
        self.system = system

    def record(self, event: Any) -> None:
        start = int(event.started_at * 1e9)
        span = self.tracer.start_span(f"chat {event.model}", start_time=start, kind=self._trace.SpanKind.CLIENT)
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.system", self.system)
        span.set_attribute("gen_ai.request.model", event.model)
        span.set_attribute("gen_ai.usage.input_tokens", event.usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", event.usage.output_tokens)
        if event.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [event.finish_reason])
        span.set_attribute("turnout.cost_usd", event.cost_usd)
        span.set_attribute("turnout.retries", event.retries)
        if event.fallback:
            span.set_attribute("turnout.fallback", event.fallback)
        if not event.ok:
            span.set_attribute("error.type", event.error_type or "error")
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.error or ""))
        span.end(end_time=start + int(event.latency_s * 1e9))

    def record_decision(self, decision: Any, *, router: str = "", **_: Any) -> None:
        name = router or decision.stage or decision.kind
        span = self.tracer.start_span(f"route {name}")
        span.set_attribute("turnout.router", name)
        span.set_attribute("turnout.route", str(decision.route))
        span.set_attribute("turnout.confidence", float(decision.confidence))
        span.set_attribute("turnout.outcome", decision.outcome)
        span.set_attribute("turnout.kind", decision.kind)
        if decision.stage:
            span.set_attribute("turnout.stage", decision.stage)
        span.end()
