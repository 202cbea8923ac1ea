"""The Ray backend on a local Ray runtime (2 CPUs): the same outputs as the local runner, per-model
concurrency held cluster-wide (max concurrent requests observed at the upstream), a worker killed
mid-run and every item still done exactly once, a cluster-wide budget, and the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from turnout.store import SQLiteStore
from turnout.workflows import Workflow
from turnout.workflows.batch import read_items, run_batch, write_output

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture
def slow_mock():
    """The mock upstream in its own process with 100 ms latency, so concurrent calls overlap."""
    from tests.conftest import mock_server_process

    with mock_server_process("--latency", "0.1") as url:
        yield url


@pytest.fixture
def job(tmp_path, slow_mock):
    mock_process = slow_mock
    root = mock_process.removesuffix("/v1")
    (tmp_path / "models.yaml").write_text(
        f"models:\n  m: {{adapter: openai, base_url: '{mock_process}', price: {{input: 1000, output: 1000}}, "
        "policies: {retry: {attempts: 1}, max_concurrency: 3}}\n"
        "budgets:\n  - {scope: model, match: m, limit_usd: 1000}\n")
    (tmp_path / "wf.yaml").write_text("name: upper\ndefault_model: m\nsteps:\n  - call: {prompt: 'Say: {input}', max_tokens: 8}\n")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"i{k}", "input": f"item number {k}"}) + "\n" for k in range(24)))
    return tmp_path, root


class _Collector(ThreadingHTTPServer):
    """A loopback OTLP/HTTP traces endpoint in a thread: the names and parents of the spans received."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        spans: list[tuple[str, str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                msg = ExportTraceServiceRequest()
                msg.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                spans.extend((s.name, s.span_id.hex(), s.parent_span_id.hex())
                             for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.spans = spans
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_cli_backend_ray_and_resume(job):
    tmp, _ = job
    cmd = [sys.executable, "-m", "turnout", "batch", str(tmp / "wf.yaml"), str(tmp / "in.jsonl"), "-o", str(tmp / "out.jsonl"),
           "--backend", "ray", "--workers", "2", "-n", "4", "--catalog", str(tmp / "models.yaml"), "--db", str(tmp / "cli.db")]
    col = _Collector()  # the workers export their runs' spans by the OTEL_* variables, as a local batch does
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{col.server_address[1]}"}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    finally:
        col.shutdown()
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in (tmp / "out.jsonl").read_text().splitlines()]
    assert len(out) == 24 and all(o["status"] == "ok" for o in out)
    by_id = {i: (name, parent) for name, i, parent in col.spans}

    def path(i: str) -> list[str]:
        names = []
        while i in by_id:
            names.append(by_id[i][0])
            i = by_id[i][1]
        return names[::-1]

    calls = [path(i) for i, (name, _) in by_id.items() if name.startswith("chat ")]
    assert sum(name == "run upper" for name, _ in by_id.values()) == 24 and len(calls) == 24  # flushed before each worker ended
    assert all(p[0] == "run upper" and p[-2:] == ["step call", "chat m"] for p in calls), calls[:3]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)  # everything done: nothing runs again
    assert r.returncode == 0 and "24 of 24 items already done" in r.stderr
    bad = subprocess.run(cmd[:-4] + ["--backend", "spark"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--backend must be local or ray" in bad.stderr


def test_same_outputs_as_local_and_cap_held_cluster_wide(ray_runtime, job):
    from turnout.policies.catalog import Catalog
    from turnout.workflows.ray_backend import run_batch_ray

    tmp, root = job
    items, _ = read_items(tmp / "in.jsonl")
    local_store = SQLiteStore(tmp / "local.db")
    import asyncio

    wf = Workflow.load(tmp / "wf.yaml", catalog=Catalog.load(tmp / "models.yaml"))
    asyncio.run(run_batch(wf, items, store=local_store, batch_id="b", concurrency=8))
    write_output(local_store, "b", items, tmp / "local.jsonl")
    before = httpx.get(root + "/_mock/stats").json()["count"]
    ray_store = SQLiteStore(tmp / "ray.db")
    summary, stats = run_batch_ray(tmp / "wf.yaml", items, store=ray_store, store_target=str(tmp / "ray.db"), batch_id="b",
                                   catalog_path=tmp / "models.yaml", workers=2, per_worker=6, stall_timeout=60)
    write_output(ray_store, "b", items, tmp / "ray.jsonl")
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "run_id"} for x in p.read_text().splitlines()]  # noqa: E731
    assert strip(tmp / "ray.jsonl") == strip(tmp / "local.jsonl")
    assert summary.done == 24 and summary.errors == 0
    assert httpx.get(root + "/_mock/stats").json()["count"] - before == 24  # each item called the model once
    assert stats["max_active"]["m"] <= 3  # 12 items in flight across 2 workers, at most 3 calls at once
    assert httpx.get(root + "/_mock/stats").json()["max_active"] == 3  # seen at the upstream: the cap, and it was reached
    assert stats["spent"]["model:m"] > 0  # the catalog's budget is charged in the one gate
    local_store.close()
    ray_store.close()


def test_a_killed_worker_does_not_lose_or_repeat_items(ray_runtime, job):
    from turnout.workflows.ray_backend import run_batch_ray

    tmp, root = job
    items, _ = read_items(tmp / "in.jsonl")
    store = SQLiteStore(tmp / "k.db")
    killed = []

    def on_item(summary, item, res):
        if summary.done == 5 and not killed:
            killed.append(True)
            ray.kill(actors[0])

    actors: list = []
    summary, _ = run_batch_ray(tmp / "wf.yaml", items, store=store, store_target=str(tmp / "k.db"), batch_id="k",
                               catalog_path=tmp / "models.yaml", workers=2, per_worker=4, on_item=on_item,
                               on_started=lambda a: actors.extend(a), stall_timeout=60)
    assert killed and summary.done == 24 and summary.errors == 0
    rows = store.ledger_items("k")
    assert len(rows) == 24 and {r["status"] for r in rows} == {"done"}
    n = write_output(store, "k", items, tmp / "k.jsonl")
    assert n == 24 and [json.loads(x)["id"] for x in (tmp / "k.jsonl").read_text().splitlines()] == [it.key for it in items]
    store.close()


@pytest.fixture
def talkative_mock():
    """A mock upstream whose answers run to 2000 words unless the request's max_tokens stops them."""
    from tests.conftest import mock_server_process

    with mock_server_process("--latency", "0.05", "--reply-words", "2000") as url:
        yield url


def test_a_ray_batch_holds_the_budget_and_shows_no_key(tmp_path, talkative_mock):
    """turnout batch --backend ray, a workflow call without max_tokens on a model that would run on,
    a global budget: spend ≤ limit + one call's maximum (the cap reached the provider); and with the
    upstream echoing the request headers, the key is in no output, stored row or message."""
    from tests.test_guarantees import KEY, _fault, _no_key
    from turnout import Price, Request

    (tmp_path / "models.yaml").write_text(
        f"models:\n  m: {{adapter: openai, base_url: '{talkative_mock}', model: m, api_key_env: UPSTREAM_KEY, "
        "price: {input: 1000, output: 1000}, policies: {retry: {attempts: 1}}}\n"
        "budgets:\n  - {scope: global, limit_usd: 3.0}\n")
    (tmp_path / "wf.yaml").write_text("name: talk\ndefault_model: m\nsteps:\n  - call: {prompt: 'Say: {input}'}\n")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"i{k}", "input": f"a b c {k}"}) + "\n" for k in range(24)))
    _fault(talkative_mock, "echo_headers", 2)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}, "UPSTREAM_KEY": KEY}
    r = subprocess.run([sys.executable, "-m", "turnout", "batch", str(tmp_path / "wf.yaml"), str(tmp_path / "in.jsonl"),
                        "-o", str(tmp_path / "out.jsonl"), "--backend", "ray", "--workers", "2", "-n", "6",
                        "--catalog", str(tmp_path / "models.yaml"), "--db", str(tmp_path / "r.db")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1, r.stderr  # some items refused by the budget, two failed on the echo
    out = (tmp_path / "out.jsonl").read_text()
    assert "unexpected response shape" in out and "budget" in out
    _no_key(r.stdout, r.stderr, out)
    store = SQLiteStore(tmp_path / "r.db")
    spent = store.spend()
    reached = [c for c in store.calls() if c.ok or c.error_type == "BadResponse"]
    store.close()
    # each call the upstream answered is recorded once (not once by the model and again by the gate)
    assert len(reached) == httpx.get(talkative_mock.removesuffix("/v1") + "/_mock/stats").json()["count"]
    one_call_max = Price(1000.0, 1000.0).estimate(Request.of("Say: a b c 23", max_tokens=512))
    assert 0 < spent <= 3.0 + one_call_max, spent
    with sqlite3.connect(tmp_path / "r.db") as c:
        for (table,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in c.execute(f"SELECT * FROM {table}"):
                _no_key(json.dumps(row, default=str))


def test_a_ray_batch_deadline_bounds_each_item(ray_runtime, job):
    """``run_batch_ray(deadline=)``: the item whose call hangs at the upstream is stopped at its
    deadline on the worker and is an error; the rest are done, each run finished."""
    from tests.test_guarantees import _fault
    from turnout.workflows.ray_backend import run_batch_ray

    tmp, root = job
    items, _ = read_items(tmp / "in.jsonl")
    items = items[:6]
    _fault(root + "/v1", "hang", 1)
    store = SQLiteStore(tmp / "dl.db")
    summary, _ = run_batch_ray(tmp / "wf.yaml", items, store=store, store_target=str(tmp / "dl.db"), batch_id="dl",
                               catalog_path=tmp / "models.yaml", workers=2, per_worker=3, stall_timeout=120, deadline=15.0)  # room for the quick ones on a loaded machine
    assert (summary.done, summary.errors) == (5, 1)
    bad = [r for r in store.ledger_items("dl") if r["status"] == "error"]
    assert len(bad) == 1 and "deadline" in bad[0]["error"]
    assert {r.status for r in store.runs(limit=None)} == {"ok", "error"}  # every run finished, none left running
    store.close()
