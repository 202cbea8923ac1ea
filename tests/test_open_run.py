"""One run lifecycle (``turnout._scope.open_run``) behind every door: the same workflow run through
the Python API, inside ``store.run``, as a batch item and through the gateway (both of its workflow
routes) lands the same calls, decisions, verdicts and steps under its run — and each run is
finished once, with the workflow's status. (The Ray batch runs items with the same ``run_item``
as the local batch: tests/test_ray_backend.py checks its outputs equal the local ones.)"""

from __future__ import annotations

import httpx
from test_workflows import ROUTER

from turnout.server import Gateway, create_app
from turnout.store import SQLiteStore
from turnout.testing import ScriptedModel
from turnout.workflows import Workflow
from turnout.workflows.batch import BatchItem, run_batch

WF = "name: w\n" + ROUTER + """
steps:
  - name: kind
    route:
      router: triage
      routes:
        billing:
          name: answer
          vote: {sample: {call: {prompt: "{input}"}}, n: 3, extract: number, early_stop: none}
      default: {call: {prompt: "general: {input}"}}
  - name: polish
    call: {prompt: "Polish: {input}"}
"""
TEXT = "my invoice says 42"


def _load(tmp_path):
    (tmp_path / "wf.yaml").write_text(WF)
    return Workflow.load(tmp_path / "wf.yaml", models={"local": ScriptedModel(default="42")})


def _attributed(store, run_id):
    store.flush()
    return {
        "calls": sorted(c.model for c in store.calls(run_id=run_id)),
        "decisions": [(d.router, d.route) for d in store.decisions(run_id=run_id)],
        "verdicts": [(v["name"], v["answer"]) for v in store.verdicts(run_id=run_id)],
        "steps": sorted((s["name"], s["kind"], s["status"]) for s in store.steps(run_id=run_id)),
    }


async def test_every_door_attributes_the_same_run(tmp_path):
    store = SQLiteStore(tmp_path / "t.db")
    wf = _load(tmp_path)
    runs = {}

    res = await wf.run(TEXT, store=store)  # the Python API
    runs["python"] = res.run_id

    with store.run("outer", TEXT) as outer:  # a run opened by hand: the workflow joins it
        assert (await wf.run(TEXT)).run_id == outer
    runs["store.run"] = outer

    await run_batch(wf, [BatchItem("a", 1, TEXT)], store=store, batch_id="b1")  # a batch item
    runs["batch"] = store.ledger_items("b1")[0]["run_id"]

    app = create_app(Gateway(wf.catalog, store, {"w": wf}, auth=False))  # the gateway, both workflow routes
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
        r = await c.post("/v1/workflows/w/runs", json={"input": TEXT})
        assert r.status_code == 200, r.text
        runs["gateway runs"] = r.json()["run_id"]
        r = await c.post("/v1/chat/completions", json={"model": "workflow/w", "messages": [{"role": "user", "content": TEXT}]})
        assert r.status_code == 200, r.text
        runs["gateway chat"] = r.json()["id"].removeprefix("chatcmpl-")

    assert len(set(runs.values())) == len(runs)  # a run of its own from each door
    seen = {door: _attributed(store, rid) for door, rid in runs.items()}
    want = seen["python"]
    assert len(want["calls"]) == 4  # three votes and the polish
    assert want["decisions"] == [("triage", "billing")] and want["verdicts"] == [("answer", "42")]
    assert {s[0] for s in want["steps"]} >= {"kind", "answer", "polish"}
    for door, got in seen.items():
        assert got == want, door
    finished = {r.run_id: r for r in store.runs(limit=None)}
    for door, rid in runs.items():
        assert finished[rid].status == "ok", door  # finished with the workflow's status, not left running
    store.close()


class _Hangs:
    """Answers texts containing 'quick' at once; every other call waits until it is cancelled."""

    name, calls, cancelled = "hangs", 0, 0

    def __init__(self):
        from turnout import Price

        self.price = Price()

    async def complete(self, request):
        import asyncio

        from turnout import Completion

        self.calls += 1
        if "quick" in request.messages[-1].content:
            return Completion("done", "hangs")
        try:
            await asyncio.Event().wait()  # never set: only the deadline ends this call
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def aclose(self):
        return None


async def test_a_runs_deadline_stops_its_calls_and_fan_outs(tmp_path):
    import asyncio

    (tmp_path / "one.yaml").write_text("name: one\nsteps:\n  - call: {prompt: '{input}'}\n")
    (tmp_path / "sec.yaml").write_text("name: sec\nsteps:\n  - section: {split: lines, map: {call: {prompt: '{section}'}}}\n")
    store = SQLiteStore(tmp_path / "d.db")
    m = _Hangs()
    one = Workflow.load(tmp_path / "one.yaml", models={"local": m})
    res = await asyncio.wait_for(one.run("slow", store=store, deadline=0.2), 60)  # the bound is a hang guard only
    assert res.status == "error" and "deadline" in res.error and m.cancelled == 1  # the call was stopped, not left running
    res = await one.run("quick", store=store, deadline=0.0)  # past already: refused before the model is asked
    assert res.status == "error" and "deadline passed before" in res.error and m.calls == 1
    sec = Workflow.load(tmp_path / "sec.yaml", models={"local": m})
    # 2 s: the quick section must finish first even on a loaded machine; the slow ones wait it out
    res = await asyncio.wait_for(sec.run("quick one\nslow two\nslow three", store=store, deadline=2.0), 60)
    assert res.status == "partial" and res.output and "done" in str(res.output)  # the quick section kept
    step = next(s for s in res.steps if s.kind == "section")
    assert step.detail["failed"] == 2 and all("timeout" in f or "deadline" in f for f in step.detail["failures"])
    store.flush()
    assert {r.status for r in store.runs(limit=None)} == {"error", "partial"}  # every run finished
    store.close()


async def test_the_gateway_takes_a_deadline_per_request(tmp_path):
    """x-turnout-deadline bounds the request's run on both workflow routes: a 504 deadline_exceeded,
    the hanging call stopped, the run finished; a bad value is a 400 naming the header."""
    import asyncio

    (tmp_path / "one.yaml").write_text("name: one\nsteps:\n  - call: {prompt: '{input}'}\n")
    store = SQLiteStore(tmp_path / "g.db")
    m = _Hangs()
    wf = Workflow.load(tmp_path / "one.yaml", models={"local": m})
    app = create_app(Gateway(wf.catalog, store, {"one": wf}, auth=False))
    hdr = {"x-turnout-deadline": "0.2"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=60) as c:
        r = await asyncio.wait_for(c.post("/v1/workflows/one/runs", json={"input": "slow"}, headers=hdr), 60)
        assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded", r.text
        r = await asyncio.wait_for(c.post("/v1/chat/completions", json={"model": "workflow/one", "messages": [
            {"role": "user", "content": "slow"}]}, headers=hdr), 60)
        assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded", r.text
        r = await c.post("/v1/workflows/one/runs", json={"input": "quick"}, headers={"x-turnout-deadline": "soon"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "x-turnout-deadline"
        r = await c.post("/v1/workflows/one/runs", json={"input": "quick"}, headers={"x-turnout-deadline": "30"})
        assert r.status_code == 200 and r.json()["output"] == "done"  # within its deadline: answered
    assert m.cancelled == 2
    store.flush()
    assert sorted(r.status for r in store.runs(limit=None)) == ["error", "error", "ok"]
    store.close()


async def test_a_batch_deadline_bounds_each_item_and_the_batch_goes_on(tmp_path):
    """``run_batch(deadline=)`` (``turnout batch --deadline``): the hanging item is stopped at its
    deadline and is an error in the ledger; the others are done; a bad deadline is a ConfigError."""
    import asyncio

    import pytest

    from turnout.errors import ConfigError

    (tmp_path / "one.yaml").write_text("name: one\nsteps:\n  - call: {prompt: '{input}'}\n")
    store = SQLiteStore(tmp_path / "b.db")
    m = _Hangs()
    wf = Workflow.load(tmp_path / "one.yaml", models={"local": m})
    items = [BatchItem("a", 1, "quick a"), BatchItem("b", 2, "slow b"), BatchItem("c", 3, "quick c")]
    summary = await asyncio.wait_for(run_batch(wf, items, store=store, batch_id="dl", concurrency=3, deadline=1.0), 60)
    assert (summary.done, summary.errors) == (2, 1) and m.cancelled == 1
    rows = {r["item_key"]: r for r in store.ledger_items("dl")}
    assert rows["b"]["status"] == "error" and "deadline" in rows["b"]["error"]
    assert rows["a"]["status"] == rows["c"]["status"] == "done"
    with pytest.raises(ConfigError, match="--deadline"):
        await run_batch(wf, items, store=store, batch_id="dl2", deadline=0)
    store.close()
