"""No blocking I/O on the event loop — SQLite included — in the gateway and the batch runner.

In the style of anyio's blockbuster fixture: ``blockbuster`` (the library) patches the blocking
calls (sqlite3, file and socket I/O, sleeping, waiting on a held lock) to raise ``BlockingError``
when one is made from code in ``turnout`` on a thread that runs an event loop. Every door is driven
once, on a store whose keys, spend and runs must be read: any store access left on the loop fails
here. (The in-process MockServer, in ``turnout.testing``, is left out of the scan.)
"""

from __future__ import annotations

import json

import httpx
import pytest
from blockbuster import blockbuster_ctx

from turnout import Catalog, Price
from turnout.models.catalog import ModelSpec
from turnout.server import Gateway, create_app
from turnout.server.keys import KeyRing
from turnout.store import SQLiteStore
from turnout.testing import MockServer, ScriptedModel
from turnout.workflows import Workflow
from turnout.workflows.batch import BatchItem, run_batch, write_output


@pytest.fixture
def watch():
    """Blocking calls from turnout's own code on the loop's thread raise from here on."""
    with blockbuster_ctx(["turnout"], excluded_modules=["turnout.testing"]) as bb:
        yield bb


async def test_the_gateway_never_blocks_its_event_loop(tmp_path, watch):
    watch.deactivate()  # set-up (files, the store, keys) is ordinary blocking code; the requests are watched
    async with MockServer() as srv:
        cat = Catalog([ModelSpec("up", "openai", base_url=srv.url, model="m", api_key_env="NONE", price=Price(1.0, 2.0))],
                      include_embedded=False, auto={"tiers": {"default": ["up"]}})
        (tmp_path / "wf.yaml").write_text("name: w\ndefault_model: up\nsteps:\n  - call: {model: up, prompt: 'Say: {input}'}\n")
        wf = Workflow.load(tmp_path / "wf.yaml", catalog=cat)
        store = SQLiteStore(tmp_path / "gw.db")
        ring = KeyRing(store)
        secret, _ = ring.create("app", models=["*"], workflows=["*"], budget_usd=5.0, period="day")
        gw = Gateway(cat, store, {"w": wf})
        app = create_app(gw)
        h = {"Authorization": f"Bearer {secret}"}
        msg = [{"role": "user", "content": "hello there"}]
        watch.activate()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            r = await c.post("/v1/chat/completions", headers=h, json={"model": "up", "messages": msg})  # key lookup, spend seed
            assert r.status_code == 200, r.text
            run_id = r.headers["x-turnout-run-id"]
            for body in ({"model": "up", "messages": msg, "stream": True}, {"model": "turnout/auto", "messages": msg},
                         {"model": "workflow/w", "messages": msg}):
                r = await c.post("/v1/chat/completions", headers=h, json=body)
                assert r.status_code == 200, r.text
            r = await c.post("/v1/workflows/w/runs", headers=h, json={"input": "hi"})
            assert r.status_code == 200 and r.json()["status"] == "ok", r.text
            assert (await c.get(f"/v1/runs/{run_id}", headers=h)).status_code == 200
            r = await c.post(f"/v1/runs/{run_id}/feedback", headers=h, json={"score": 1})
            assert r.status_code == 200, r.text
            for path in ("/v1/models", "/healthz", "/readyz", "/metrics", "/", "/models", f"/runs/{run_id}"):
                assert (await c.get(path, headers=h)).status_code == 200, path
            r = await c.post("/v1/chat/completions", headers={"Authorization": "Bearer tk-unknown"}, json={"model": "up", "messages": msg})
            assert r.status_code == 401
        watch.deactivate()
        await gw.aclose()
        store.close()


async def test_a_batch_never_blocks_its_event_loop(tmp_path, watch):
    watch.deactivate()
    (tmp_path / "wf.yaml").write_text("name: w\nsteps:\n  - call: {model: m, prompt: 'Say: {input}'}\n")
    wf = Workflow.load(tmp_path / "wf.yaml", models={"m": ScriptedModel(default="ok", name="m")})
    store = SQLiteStore(tmp_path / "b.db")
    items = [BatchItem(f"i{k}", k + 1, f"text {k}") for k in range(8)]
    watch.activate()
    summary = await run_batch(wf, items, store=store, batch_id="b1", concurrency=4)  # the ledger is written in threads
    watch.deactivate()
    assert summary.done == 8
    assert write_output(store, "b1", items, tmp_path / "out.jsonl") == 8
    assert all(json.loads(line)["status"] == "ok" for line in (tmp_path / "out.jsonl").read_text().splitlines())
    store.close()
