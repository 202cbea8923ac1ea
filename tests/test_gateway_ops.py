"""Operating the gateway: an access-log line per request (the key by its id, never its secret),
``/metrics`` an operator can alert on (requests by key/team/model/status, time to first token,
tokens and cost by key, budgets left, decisions by router and route, escalations) and
``x-ratelimit-*`` headers on every response of a key with limits. ``turnout serve`` runs as a user
starts it, in front of the loopback mock upstream."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_gateway import start_server, stop

from turnout.server.keys import KeyRing
from turnout.store import SQLiteStore

WF = """
name: triage
routers:
  kind:
    router: rule
    fallback: general
    routes:
      human: {keywords: [lawyer]}
      general: {}
steps:
  - name: answer
    route:
      router: kind
      routes:
        human: {escalate: {queue: legal, message: "A person will answer: {input}"}}
      default: {call: {model: cheap, prompt: "{input}"}}
"""


def _files(tmp_path: Path, upstream: str) -> tuple[str, str]:
    (tmp_path / "models.yaml").write_text(
        f"models:\n  cheap: {{adapter: openai, base_url: '{upstream}', price: {{input: 1, output: 2}}, tier: small}}\n"
        "auto: {tiers: {small: [cheap]}}\n")
    (tmp_path / "wf.yaml").write_text(WF)
    with SQLiteStore(tmp_path / "gw.db") as store:
        secret, key = KeyRing(store).create("ops", models=["*"], workflows=["*"], rpm=100, budget_usd=1.0, period="day", team="search")
    return secret, key.key_id


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def _value(samples: list, name: str, **labels: str) -> float:
    got = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    assert got, f"no sample {name} {labels}"
    return sum(got)


def test_access_log_metrics_and_rate_headers_for_every_request(tmp_path, mock_process):
    secret, kid = _files(tmp_path, mock_process)
    proc, base = start_server(tmp_path, mock_process, "--log-format", "json")
    auth = {"Authorization": f"Bearer {secret}"}
    msg = [{"role": "user", "content": "hello"}]
    try:
        with httpx.Client(base_url=base, headers=auth, timeout=60) as c:
            r1 = c.post("/v1/chat/completions", json={"model": "cheap", "messages": msg, "max_tokens": 8})
            r2 = c.post("/v1/chat/completions", json={"model": "cheap", "messages": msg, "max_tokens": 8})
            with c.stream("POST", "/v1/chat/completions", json={"model": "cheap", "messages": msg, "stream": True}) as s:
                streamed = "".join(s.iter_text())
            auto = c.post("/v1/chat/completions", json={"model": "turnout/auto", "messages": msg, "max_tokens": 8})
            wf = c.post("/v1/chat/completions", json={"model": "workflow/triage", "messages": [{"role": "user", "content": "a lawyer, now"}]})
            missing = c.post("/v1/chat/completions", json={"model": "no-such-model", "messages": msg})
            bad_key = c.post("/v1/chat/completions", json={"model": "cheap", "messages": msg}, headers={"Authorization": "Bearer sk-wrong"})
            metrics = httpx.get(base + "/metrics", timeout=30).text
    finally:
        stop(proc)
    assert [r.status_code for r in (r1, r2, auto, wf, missing, bad_key)] == [200, 200, 200, 200, 404, 401] and "data: [DONE]" in streamed

    # x-ratelimit-*: the key's minute of requests, counting down; on refusals too
    assert r1.headers["x-ratelimit-limit-requests"] == "100"
    assert int(r2.headers["x-ratelimit-remaining-requests"]) == int(r1.headers["x-ratelimit-remaining-requests"]) - 1 < 100
    assert r1.headers["x-ratelimit-reset-requests"].endswith(("ms", "s")) and "x-ratelimit-limit-requests" in missing.headers

    # the access log: one JSON line per request, the key by id, never the secret
    log = (tmp_path / "serve.log").read_text()
    assert secret not in log and "sk-wrong" not in log
    lines = [json.loads(x) for x in log.splitlines() if x.startswith("{")]
    chat = [x for x in lines if x["path"] == "/v1/chat/completions"]
    assert [(x["status"], x.get("model")) for x in chat] == [
        (200, "cheap"), (200, "cheap"), (200, "cheap"), (200, "turnout/auto"), (200, "workflow/triage"), (404, None), (401, None)]
    assert all(x["key"] == kid and x["team"] == "search" for x in chat[:6]) and "key" not in chat[6]
    assert all(x["method"] == "POST" and x["latency_s"] > 0 and len(x["run_id"]) == 32 for x in chat[:5])
    assert chat[0]["cost_usd"] > 0 and chat[2]["cost_usd"] > 0 and chat[2]["ttft_s"] <= chat[2]["latency_s"]  # a stream's cost at its end
    assert chat[3]["route"] and chat[3]["served"] == "cheap"  # turnout/auto: the route and the model that answered

    # /metrics: labelled for alerting
    sm = _samples(metrics)
    ep = "/v1/chat/completions"
    assert _value(sm, "turnout_gateway_requests_total", endpoint=ep, key=kid, team="search", model="cheap", status="200") == 3
    assert _value(sm, "turnout_gateway_requests_total", endpoint=ep, key=kid, model="", status="404") == 1
    assert _value(sm, "turnout_gateway_requests_total", endpoint=ep, key="", status="401") == 1
    assert _value(sm, "turnout_gateway_ttft_seconds_count", model="cheap") == 1
    assert _value(sm, "turnout_gateway_request_seconds_count", endpoint=ep, model="cheap") == 3
    assert _value(sm, "turnout_key_tokens_total", key=kid, team="search", model="cheap", direction="output") > 0
    spent = _value(sm, "turnout_key_cost_usd_total", key=kid, team="search", model="cheap")
    assert spent > 0
    budget = next(lab["budget"] for n, lab, _ in sm if n == "turnout_budget_remaining_usd" and "ops" in lab["budget"])
    assert _value(sm, "turnout_budget_limit_usd", budget=budget) == 1.0
    assert _value(sm, "turnout_budget_remaining_usd", budget=budget) == pytest.approx(1.0 - spent, abs=1e-6)
    assert _value(sm, "turnout_routing_decisions_total", router="turnout/auto") == 1
    assert _value(sm, "turnout_routing_decisions_total", router="triage/answer", route="human") == 1
    assert _value(sm, "turnout_escalations_total", queue="legal") == 1


def test_the_default_access_log_is_a_readable_line_and_can_be_switched_off(tmp_path, mock_process):
    secret, kid = _files(tmp_path, mock_process)
    proc, base = start_server(tmp_path, mock_process)
    try:
        r = httpx.post(base + "/v1/chat/completions?api_key=leak", headers={"Authorization": f"Bearer {secret}"}, timeout=60,
                       json={"model": "cheap", "messages": [{"role": "user", "content": "hi"}]})
        pasted = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv"  # a key pasted into a path by mistake
        assert httpx.get(f"{base}/v1/runs/{pasted}", headers={"Authorization": f"Bearer {secret}"}, timeout=60).status_code == 404
    finally:
        stop(proc)
    assert r.status_code == 200
    line = next(x for x in (tmp_path / "serve.log").read_text().splitlines() if "/v1/chat/completions" in x)
    assert '"POST /v1/chat/completions" 200 ' in line and f"key={kid}" in line and "model=cheap" in line and "team=search" in line
    assert "$0.0" in line and "ms" in line and "leak" not in line and secret not in line  # the path without its query string
    log = (tmp_path / "serve.log").read_text()
    assert '"GET /v1/runs/' in log and pasted not in log  # a path a client chose is scrubbed
    (tmp_path / "serve.log").unlink()
    proc, base = start_server(tmp_path, mock_process, "--no-access-log")
    try:
        httpx.post(base + "/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"}, timeout=60,
                   json={"model": "cheap", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        stop(proc)
    assert "/v1/chat/completions" not in (tmp_path / "serve.log").read_text()
