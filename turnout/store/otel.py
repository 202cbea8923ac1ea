"""OpenTelemetry: a span tree for every run — run → steps → decisions, votes, sections, branches →
model calls (GenAI semantic conventions: the provider as ``gen_ai.system``, request and response
model, tokens) — exported by OTLP, configured the standard way.

- ``setup()`` reads the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_EXPORTER=otlp|console|none``,
  ``OTEL_SDK_DISABLED``) and, if an endpoint is set, exports over OTLP/HTTP with a batching
  processor (off the event loop, in the SDK's thread). ``turnout serve``, ``run``, ``batch`` and
  every other command call it at start; Python code calls it once. Without an endpoint nothing is
  set up and tracing stays off (one global read per span site).
- ``enable(provider)`` uses an application's own ``TracerProvider`` instead.
- ``OTelSink`` is the older per-call sink (a ``Traced`` sink and decision sink), kept for code that
  passes it explicitly; its spans have no parent.

``pip install 'turnout[otel]'``.
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .. import _telemetry
from .._errors import ConfigError

__all__ = ["OTelSink", "OTelTracing", "call_attributes", "enable", "setup"]


def _otel() -> Any:
    try:
        from opentelemetry import context, trace
    except ImportError:
        raise ConfigError("OpenTelemetry spans need the otel extra: pip install 'turnout[otel]'") from None
    return trace, context


def call_attributes(event: Any, provider: str, model_id: str) -> dict[str, Any]:
    """A model call's span attributes, in the GenAI semantic conventions (and turnout's own)."""
    a: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.system": provider, "gen_ai.provider.name": provider,
        "gen_ai.request.model": model_id, "gen_ai.response.model": model_id,
        "gen_ai.usage.input_tokens": event.usage.input_tokens, "gen_ai.usage.output_tokens": event.usage.output_tokens,
        "turnout.model": event.model, "turnout.cost_usd": float(event.cost_usd), "turnout.retries": event.retries,
        "turnout.stream": bool(event.stream),
    }
    if event.finish_reason:
        a["gen_ai.response.finish_reasons"] = [event.finish_reason]
    if event.fallback:
        a["turnout.fallback"] = event.fallback
    if event.cached:
        a["turnout.cached"] = True
    if event.tools:
        a["turnout.tools"] = list(event.tools)
    if not event.ok:
        a["error.type"] = event.error_type or "error"
    return a


def _decision_attributes(router: str, d: Any) -> dict[str, Any]:
    a = {"turnout.router": router, "turnout.route": str(d.route), "turnout.confidence": float(d.confidence), "turnout.outcome": d.outcome,
         "turnout.kind": d.kind}
    if d.stage:
        a["turnout.stage"] = d.stage
    if d.scores:
        a["turnout.scores"] = json.dumps({str(k): round(float(v), 4) for k, v in d.scores.items()})
    return a


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OTel takes str, bool, int, float and their sequences: anything else as text; None dropped."""
    out: dict[str, Any] = {}
    for k, v in attributes.items():
        if v is None:
            continue
        out[k] = v if isinstance(v, (str, bool, int, float)) or (isinstance(v, list) and all(isinstance(x, str) for x in v)) else str(v)
    return out


class OTelTracing:
    """The span-tree backend of ``turnout._telemetry`` over the OpenTelemetry API."""

    def __init__(self, provider: Any = None) -> None:
        from .. import __version__

        self.trace, self.context = _otel()
        self.provider = provider or self.trace.get_tracer_provider()
        self.tracer = self.provider.get_tracer("turnout", __version__)

    def flush(self) -> None:
        force = getattr(self.provider, "force_flush", None)
        if force is not None:
            force(10_000)

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, Any], *, headers: Any = None, server: bool = False) -> Iterator[Any]:
        parent = None
        if headers is not None:  # W3C trace context of the caller (traceparent, tracestate)
            from opentelemetry import propagate

            parent = propagate.extract(headers)
        s = self.tracer.start_span(name, context=parent, attributes=_clean(attributes),
                                   kind=self.trace.SpanKind.SERVER if server else self.trace.SpanKind.INTERNAL)
        token = self.context.attach(self.trace.set_span_in_context(s))
        try:
            yield s
        except BaseException as e:
            status = getattr(e, "telemetry_status", None)  # a run that waits for a person is not an error
            if status is not None:
                s.set_attribute("turnout.status", status)
            else:
                s.set_attribute("error.type", type(e).__name__)
                s.set_status(self.trace.Status(self.trace.StatusCode.ERROR, type(e).__name__))
            raise
        finally:
            self.context.detach(token)
            s.end()

    def set(self, s: Any, attributes: Mapping[str, Any]) -> None:
        s.set_attributes(_clean(attributes))

    def current(self) -> Any:
        return self.context.get_current()

    @contextmanager
    def attach(self, ctx: Any) -> Iterator[None]:
        token = self.context.attach(ctx)
        try:
            yield
        finally:
            self.context.detach(token)

    def call(self, event: Any, provider: str, model_id: str) -> None:
        start = int(event.started_at * 1e9)
        s = self.tracer.start_span(f"chat {model_id}", start_time=start, kind=self.trace.SpanKind.CLIENT,
                                   attributes=_clean(call_attributes(event, provider, model_id)))
        if not event.ok:
            s.set_status(self.trace.Status(self.trace.StatusCode.ERROR, (event.error or "")[:200]))
        s.end(end_time=start + int(event.latency_s * 1e9))

    def decision(self, router: str, d: Any) -> None:
        import time

        end = time.time_ns()
        s = self.tracer.start_span(f"route {router}", start_time=end - int(d.latency_s * 1e9),
                                   attributes=_clean(_decision_attributes(router, d)))
        s.end(end_time=end)


def enable(provider: Any = None) -> OTelTracing:
    """Spans on, through ``provider`` (default: the global one the application configured)."""
    t = OTelTracing(provider)
    _telemetry.install(t)
    return t


def setup(*, service_name: str = "turnout", env: Mapping[str, str] | None = None) -> bool:
    """Export spans as the ``OTEL_*`` variables say (module docstring); True if tracing is now on.
    Nothing happens without an endpoint (or ``OTEL_TRACES_EXPORTER=console``)."""
    e = os.environ if env is None else env
    exporter = (e.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    endpoint = e.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or e.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if e.get("OTEL_SDK_DISABLED", "").lower() == "true" or exporter == "none" or (exporter == "otlp" and not endpoint):
        return False
    if exporter not in ("otlp", "console"):
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: turnout exports otlp, console or none")
    protocol = (e.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or e.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").lower()
    if exporter == "otlp" and protocol != "http/protobuf":
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: turnout exports OTLP over http/protobuf (port 4318 on a collector)")
    trace, _ = _otel()
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ConfigError("exporting spans needs the OpenTelemetry SDK: pip install 'turnout[otel]'") from None
    resource = Resource.create({} if e.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name})  # the variables win
    provider = TracerProvider(resource=resource)
    if exporter == "console":
        span_exporter: Any = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("OTLP export needs its exporter: pip install 'turnout[otel]'") from None
        span_exporter = OTLPSpanExporter()  # endpoint, headers, timeout, compression: from the same variables
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # what is still batched is sent when the process ends
    enable(provider)
    return True


class OTelSink:
    """A sink for ``Traced`` and for decisions: one span per call and per decision, recorded after
    the fact with the call's own start and end times (no parent; ``setup``/``enable`` give the tree)."""

    def __init__(self, tracer_provider: Any = None, *, system: str | None = None) -> None:
        trace, _ = _otel()
        self._trace = trace
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("turnout")
        self.system = system

    def record(self, event: Any) -> None:
        start = int(event.started_at * 1e9)
        provider = self.system or getattr(event, "provider", "") or "turnout"  # the provider that answered (Traced sets it)
        model_id = getattr(event, "provider_model", "") or event.model
        span = self.tracer.start_span(f"chat {model_id}", start_time=start, kind=self._trace.SpanKind.CLIENT,
                                      attributes=_clean(call_attributes(event, provider, model_id)))
        if not event.ok:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.error or ""))
        span.end(end_time=start + int(event.latency_s * 1e9))

    def record_decision(self, decision: Any, *, router: str = "", **_: Any) -> None:
        name = router or decision.stage or decision.kind
        span = self.tracer.start_span(f"route {name}", attributes=_clean(_decision_attributes(name, decision)))
        span.end()
