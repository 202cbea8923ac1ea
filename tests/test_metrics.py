"""Prometheus metrics as a Traced sink and a decision sink."""

from __future__ import annotations

import pytest

from turnout import Price, Request
from turnout.errors import ProviderUnavailable
from turnout.policies import Fallback, Traced
from turnout.routing import Route, RuleRouter
from turnout.store import SQLiteStore
from turnout.store.metrics import Metrics, Tee
from turnout.testing import ScriptedModel


async def test_calls_and_decisions_become_metrics(tmp_path):
    metrics = Metrics()
    a = ScriptedModel(queue=[ProviderUnavailable("down")], default="ok", name="primary", price=Price(1000, 1000))
    b = ScriptedModel(default="ok", name="backup", price=Price(1000, 1000))
    with SQLiteStore(tmp_path / "t.db") as store:
        sink = Tee(store, metrics)
        m = Traced(Fallback([a, b]), sink)
        for i in range(3):
            await m.complete(Request.of(f"q{i}"))
        r = RuleRouter([Route("billing", keywords=("invoice",)), Route("general")], fallback="general")
        sink.record_decision(await r.decide("invoice"), router="support")
        assert len(store.calls()) == 3 and len(store.decisions()) == 1
    reg = metrics.registry
    assert reg.get_sample_value("turnout_model_requests_total", {"model": "primary", "outcome": "ok"}) == 3
    assert reg.get_sample_value("turnout_model_fallbacks_total", {"model": "primary", "fallback": "backup"}) == 3
    assert reg.get_sample_value("turnout_model_cost_usd_total", {"model": "primary"}) > 0
    assert reg.get_sample_value("turnout_model_latency_seconds_count", {"model": "primary"}) == 3
    assert reg.get_sample_value("turnout_routing_decisions_total", {"router": "support", "route": "billing", "outcome": "matched"}) == 1
    text = metrics.exposition().decode()
    assert "turnout_model_tokens_total" in text and 'direction="output"' in text


def test_two_instances_do_not_collide():
    Metrics()
    Metrics()  # separate registries by default
    pytest.importorskip("prometheus_client")
