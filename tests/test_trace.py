"""Traced: one event per call, with outcome, tokens, cost; never the prompt text."""

from __future__ import annotations

import pytest

from turnout import Price, Request
from turnout.errors import ProviderUnavailable
from turnout.policies import MemorySink, Traced
from turnout.testing import ScriptedModel


async def test_one_event_per_call_with_usage_and_cost():
    sink = MemorySink()
    m = Traced(ScriptedModel(default="answer", price=Price(1, 1), name="s"), sink)
    await m.complete(Request.of("secret prompt text", metadata={"workflow": "wf1"}))
    assert len(sink) == 1
    e = sink.events[0]
    assert e.ok and e.model == "s" and e.usage.output_tokens > 0 and e.cost_usd > 0 and e.latency_s >= 0
    assert e.tags == {"workflow": "wf1"}
    assert "secret prompt text" not in repr(e)


async def test_failures_are_recorded_and_reraised():
    sink = MemorySink()
    m = Traced(ScriptedModel(queue=[ProviderUnavailable("down")], name="s"), sink)
    with pytest.raises(ProviderUnavailable):
        await m.complete(Request.of("x"))
    assert not sink.events[0].ok and sink.events[0].error_type == "ProviderUnavailable"
    assert sink.totals()["errors"] == 1


async def test_stream_is_one_event():
    sink = MemorySink()
    m = Traced(ScriptedModel(default="one two three"), sink)
    chunks = [c async for c in m.stream(Request.of("x"))]
    assert len(chunks) == 4 and len(sink) == 1 and sink.events[0].stream and sink.events[0].ok


async def test_a_stream_is_recorded_at_its_final_chunk_and_a_cut_one_as_cut():
    """A caller that stops right after the final chunk (the gateway does) still gets the call
    recorded, as ok; one that stops part way gets it recorded as cut (StreamClosed)."""
    from contextlib import aclosing

    from turnout import Request
    from turnout.policies.trace import MemorySink, Traced
    from turnout.testing import ScriptedModel

    sink = MemorySink()
    m = Traced(ScriptedModel(default="one two three four"), sink)
    async with aclosing(m.stream(Request.of("x"))) as agen:
        async for chunk in agen:
            if chunk.done:
                break  # stop at once, as a server does after the final chunk
    assert [(e.ok, e.error_type) for e in sink.events] == [(True, None)] and sink.events[0].usage.output_tokens > 0
    async with aclosing(m.stream(Request.of("x"))) as agen:
        async for _ in agen:
            break  # the first piece only
    assert [(e.ok, e.error_type) for e in sink.events][1:] == [(False, "StreamClosed")]
