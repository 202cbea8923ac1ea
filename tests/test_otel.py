"""OpenTelemetry spans for calls (GenAI conventions) and decisions, captured in memory."""

from __future__ import annotations

import pytest

from turnout import Request
from turnout.errors import ProviderUnavailable
from turnout.policies import Traced
from turnout.routing import Route, RuleRouter
from turnout.store.otel import OTelSink
from turnout.testing import ScriptedModel

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


async def test_spans_follow_the_genai_conventions():
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider)
    m = Traced(ScriptedModel(queue=["hello there", ProviderUnavailable("down")], name="local"), sink)
    await m.complete(Request.of("hi"))
    with pytest.raises(ProviderUnavailable):
        await m.complete(Request.of("again"))
    r = RuleRouter([Route("billing", keywords=("invoice",)), Route("general")], fallback="general")
    sink.record_decision(await r.decide("my invoice"), router="support")
    spans = exporter.get_finished_spans()
    ok, failed, decision = spans
    assert ok.name == "chat local" and ok.attributes["gen_ai.operation.name"] == "chat"
    assert ok.attributes["gen_ai.request.model"] == "local" and ok.attributes["gen_ai.usage.output_tokens"] > 0
    assert ok.attributes["gen_ai.system"] == "turnout.testing"  # the provider that answered, not "turnout"
    assert ok.end_time >= ok.start_time
    assert failed.attributes["error.type"] == "ProviderUnavailable" and not failed.status.is_ok
    assert decision.name == "route support" and decision.attributes["turnout.route"] == "billing"
