"""OTLP export configured the standard way: ``turnout run`` (and ``serve``) with only the OTEL_*
variables set sends its spans — run → steps → decisions, votes, sections, branches → calls, in
the GenAI conventions — to a collector. The collector here is a loopback OTLP/HTTP endpoint that
decodes what the SDK's own exporter sends."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from turnout.testing import MockServer, serve_app

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

WF = """
name: support
routers:
  kind:
    router: rule
    fallback: general
    routes:
      billing: {keywords: [invoice]}
      general: {}
steps:
  - name: triage
    route:
      router: kind
      routes:
        billing:
          vote: {sample: {call: {prompt: "Answer: {input}"}}, n: 3, early_stop: none}
      default: {call: {prompt: "{input}"}}
  - name: parts
    section: {split: lines, map: {call: {prompt: "Sum: {section}"}}}
"""


class Collector:
    """A loopback OTLP/HTTP traces endpoint: every span received, with its resource."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.services: set[str] = set()
        self.requests = 0

    async def traces(self, request: web.Request) -> web.Response:
        msg = pb.ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        self.requests += 1
        for rs in msg.resource_spans:
            res = {a.key: a.value.string_value for a in rs.resource.attributes}
            self.services.add(res.get("service.name", ""))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {a.key: _value(a.value) for a in s.attributes}
                    self.spans.append({"name": s.name, "id": s.span_id.hex(), "parent": s.parent_span_id.hex(), "trace": s.trace_id.hex(),
                                       "attrs": attrs, "error": s.status.code == 2})
        return web.Response(body=pb.ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _collector() -> tuple[Collector, web.Application]:
    """An OTLP/HTTP collector (serve it with ``serve_app``)."""
    c = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", c.traces)
    return c, app


def _tree(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kids = defaultdict(list)
    for s in spans:
        kids[s["parent"]].append(s)
    return kids


async def test_turnout_run_exports_the_span_tree_by_the_otel_variables(tmp_path: Path):
    col, app = _collector()
    async with serve_app(app) as endpoint, MockServer() as srv:
        (tmp_path / "wf.yaml").write_text(WF)
        (tmp_path / "models.yaml").write_text(f"models:\n  local: {{adapter: openai, base_url: '{srv.url}', model: gpt-4o-mini}}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TURNOUT_", "OTEL_"))}
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="support-bot", TURNOUT_DB=str(tmp_path / "t.db"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turnout", "run", str(tmp_path / "wf.yaml"), "--catalog", str(tmp_path / "models.yaml"),
            "--input", "my invoice is wrong\nplease fix it", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)  # the exporter flushes before the process exits
        assert proc.returncode == 0, err.decode()
    spans = col.spans
    assert col.services == {"support-bot"} and len({s["trace"] for s in spans}) == 1  # one trace, named as the variable says
    kids, by_id = _tree(spans), {s["id"]: s for s in spans}
    (root,) = kids[""]
    assert root["name"] == "run support" and len(root["attrs"]["turnout.run_id"]) == 32 and root["attrs"]["turnout.status"] == "ok"

    def path(s: dict[str, Any]) -> list[str]:
        names = []
        while s is not None:
            names.append(s["name"])
            s = by_id.get(s["parent"])
        return names[::-1]

    calls = [s for s in spans if s["name"].startswith("chat ")]
    sections = [s for s in spans if s["name"].startswith("branch ") and by_id[s["parent"]]["name"] == "step section parts"]
    assert sections and len(calls) == 3 + len(sections)  # three votes, a call per section
    for c in calls:  # GenAI conventions: the provider, the provider's model id, tokens
        a = c["attrs"]
        assert a["gen_ai.system"] == "openai" and a["gen_ai.request.model"] == "gpt-4o-mini" and a["turnout.model"] == "local"
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.usage.output_tokens"] > 0 and not c["error"]
    vote_paths = {tuple(path(c)) + (c["id"],) for c in calls if "vote vote" in path(c)}
    assert len(vote_paths) == 3 and len({p[5] for p in vote_paths}) == 3  # each sample under its own branch
    for p in vote_paths:
        assert p[:3] == ("run support", "step chain support", "step route triage") and p[3:6] == ("step vote", "vote vote", p[5])
        assert p[5].startswith("branch ") and p[-3:-1] == ("step call", "chat gpt-4o-mini")
    section_paths = [path(c) for c in calls if "step section parts" in path(c)]
    assert len(section_paths) == len(sections) and all(p[-3].startswith("branch ") and p[-2] == "step call" for p in section_paths)
    (decision,) = [s for s in spans if s["name"] == "route kind"]
    assert by_id[decision["parent"]]["name"] == "step route triage"
    assert decision["attrs"]["turnout.route"] == "billing" and decision["attrs"]["turnout.outcome"] == "matched"
    (vote,) = [s for s in spans if s["name"] == "vote vote"]
    assert vote["attrs"]["turnout.vote.samples"] == 3 and vote["attrs"]["turnout.vote.agreement"] == 1.0 and "tally" in str(vote["attrs"])


def test_without_an_endpoint_nothing_is_set_up():
    from turnout import _telemetry
    from turnout.store.otel import setup

    assert setup(env={}) is False and setup(env={"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is False
    assert not _telemetry.enabled()
    from turnout import ConfigError

    with pytest.raises(ConfigError, match="http/protobuf"):
        setup(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


async def test_turnout_serve_exports_a_request_span_that_joins_the_callers_trace(tmp_path: Path):
    import aiohttp
    from test_gateway import free_port

    col, app = _collector()
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with serve_app(app) as endpoint, MockServer() as srv:
        (tmp_path / "models.yaml").write_text(f"models:\n  cheap: {{adapter: openai, base_url: '{srv.url}', model: gpt-4o-mini}}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TURNOUT_", "OTEL_"))}
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="gateway")
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turnout", "serve", "--port", str(port), "--no-auth", "--catalog", str(tmp_path / "models.yaml"),
            "--db", str(tmp_path / "gw.db"), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            for _ in range(1200):  # a bound on start-up, polled: not a timing window
                try:
                    async with s.get(base + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            body = {"model": "cheap", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            async with s.post(base + "/v1/chat/completions", json=body,
                              headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"}) as r:
                assert r.status == 200 and b"[DONE]" in await r.read()
        proc.terminate()  # a graceful stop: the exporter flushes before the process exits
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    by_name = {s["name"]: s for s in col.spans}
    assert by_name, err.decode()[-3000:]
    http, run, call = by_name["POST /v1/chat/completions"], by_name["run gateway"], by_name["chat gpt-4o-mini"]
    assert col.services == {"gateway"} and {http["trace"], run["trace"], call["trace"]} == {caller_trace}  # the caller's trace, continued
    assert http["parent"] == caller_span and run["parent"] == http["id"] and call["parent"] == run["id"], err.decode()[-2000:]
    assert http["attrs"]["http.response.status_code"] == 200 and call["attrs"]["turnout.stream"] is True
    assert call["attrs"]["gen_ai.system"] == "openai" and call["attrs"]["gen_ai.usage.output_tokens"] > 0
