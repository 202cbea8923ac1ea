"""People in the loop: a run that escalates waits on a durable queue item and resumes from the step
that asked when a person resolves it — through the Python API and the CLI, with faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from turnout.cli import app
from turnout.errors import QueueError
from turnout.store import SQLiteStore
from turnout.testing import FakeEmbedder, FunctionModel
from turnout.workflows import Workflow
from turnout.workflows.nodes import Call, RouteStep, VoteStep
from turnout.workflows.people import Approve, Escalate
from turnout.workflows.sequence import Sequence
from turnout.workflows.tools import FunctionTool, ToolStep

runner = CliRunner()

TRIAGE = """name: triage
routers:
  r:
    router: rule
    fallback: human
    routes:
      billing: {keywords: [invoice]}
      tech: {keywords: [crash]}
      human: {description: a person}
handlers:
  billing: {call: {prompt: "billing: {input}"}}
steps:
  - name: pre
    call: {prompt: "read {input}"}
  - name: answer
    route:
      router: r
      routes:
        billing: billing
        tech: {call: {prompt: "tech: {input}"}}
        human: {escalate: {queue: support, message: "A person will reply to: {input}"}}
"""


class Counting:
    """A model that answers ``echo: <prompt>`` and remembers every prompt it was sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.model = FunctionModel(self._reply)

    def _reply(self, r) -> str:
        self.prompts.append(r.messages[-1].content)
        return f"echo: {r.messages[-1].content}"


def write(tmp_path, text, name="wf.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


async def test_an_unsure_input_waits_then_resumes_on_the_route_a_person_picks(tmp_path):
    m = Counting()
    wf = Workflow.load(write(tmp_path, TRIAGE), models={"local": m.model})
    with SQLiteStore(tmp_path / "t.db") as store:
        res = await wf.run("my order is late", store=store)
        assert res.status == "waiting" and res.text == "A person will reply to: echo: read my order is late"
        assert m.prompts == ["read my order is late"]
        [item] = await store.queue()
        assert item["item_id"] == res.waiting and item["kind"] == "route" and item["choices"] == ["billing", "tech"]
        assert item["context"]["outcome"] == "fallback" and item["input"] == "echo: read my order is late"
        assert store.runs()[0].status == "waiting"

        done = await res.resume(by="ana", route="tech", note="a shipping bug")
        assert done.status == "ok" and done.text == "echo: tech: echo: read my order is late"
        assert done.run_id == res.run_id and done.calls == 2  # the first call counted, not made again
        assert m.prompts == ["read my order is late", "tech: echo: read my order is late"]  # nothing repeated
        runs = store.runs()
        assert [(r.run_id, r.status, r.output) for r in runs] == [(res.run_id, "ok", done.text)]  # one run, not a new one
        steps = [(s["name"], s["status"]) for s in store.steps(run_id=res.run_id)]
        assert sorted(steps) == sorted([("pre", "ok"), ("call", "ok"), ("escalate", "ok"), ("answer", "ok"), ("triage", "ok")])
        assert len(store.calls(run_id=res.run_id)) == 2 and len(store.decisions(run_id=res.run_id)) == 1
        esc = next(s for s in store.steps(run_id=res.run_id) if s["name"] == "escalate")
        assert esc["detail"]["resolved_by"] == "ana" and esc["detail"]["resolution"] == {"route": "tech", "note": "a shipping bug"}
        item = store.queue_item(res.waiting)
        assert item["status"] == "resolved" and item["resolved_by"] == "ana"

        with pytest.raises(QueueError, match="already resolved"):  # resuming twice is impossible
            await store.queue.resolve(res.waiting, "bob", route="billing")
        with pytest.raises(QueueError, match="not waiting"):
            await wf.resume(res.run_id, store=store)
        assert len(m.prompts) == 2


async def test_a_semantic_router_item_shows_the_top_routes_and_a_written_answer_becomes_the_output(tmp_path):
    from turnout.routing import Route, SemanticRouter

    emb = FakeEmbedder()
    router = SemanticRouter([Route("billing", utterances=("invoice charge payment",)), Route("tech", utterances=("crash error bug",)),
                             Route("human")], emb, temperature=5.0, escalate_below=0.99, escalation="human", fallback="human", name="triage")
    m = Counting()
    root = Sequence([RouteStep(router, {"billing": Call("b: {input}"), "tech": Call("t: {input}"), "human": Escalate("support")},
                               name="answer")])
    wf = Workflow(root, name="py-triage", resolve=lambda n: m.model)
    with SQLiteStore(tmp_path / "t.db") as store:
        res = await wf.run("the payment crashed", store=store)
        assert res.status == "waiting"
        item = store.queue_item(res.waiting)
        assert set(item["context"]["scores"]) == {"billing", "tech"} and item["context"]["router"] == "triage"
        done = await res.resume(by="ana", answer="We have refunded the payment.")
        assert done.status == "ok" and done.text == "We have refunded the payment." and m.prompts == []


async def test_a_low_agreement_vote_escalates_with_its_tally(tmp_path):
    answers = iter(["A", "B", "C", "D", "E"])
    sample = Call("q: {input}", name="s")
    wf = Workflow(Sequence([VoteStep(sample, n=3, early_stop=None, escalate_below=0.9, escalate=Escalate("review"), name="v")]),
                  name="vote-wf", resolve=lambda n: FunctionModel(lambda r: next(answers)))
    with SQLiteStore(tmp_path / "t.db") as store:
        res = await wf.run("which?", store=store)
        assert res.status == "waiting"
        item = store.queue_item(res.waiting)
        assert item["kind"] == "answer" and len(item["context"]["tally"]) == 3 and item["context"]["agreement"] < 0.9
        done = await res.resume(by="ana", answer="B")
        assert done.text == "B" and done.status == "ok" and done.calls == 3
        assert len(store.verdicts(run_id=res.run_id)) == 1  # the vote was not run again


def _refund_workflow(refunds: list[dict]):
    def refund(order: str, amount: float) -> str:
        """Refund an order."""
        refunds.append({"order": order, "amount": amount})
        return f"refunded {amount} on {order}"

    extract = Call("extract {input}", json_schema={"type": "object"}, name="extract")
    approve = Approve("refunds", when="{steps.extract.amount} > 100", rejected="No refund: {reason}", name="approval")
    pay = ToolStep(FunctionTool(refund), arguments={"order": "{steps.extract.order}", "amount": "{steps.extract.amount}"}, name="pay")
    return Sequence([extract, approve, pay], name="refund")


@pytest.mark.parametrize("amount", [250, 40])
async def test_an_approve_gate_holds_a_large_refund_until_approved(tmp_path, amount):
    refunds: list[dict] = []
    model = FunctionModel(lambda r: json.dumps({"order": "A-1", "amount": amount}))
    wf = Workflow(_refund_workflow(refunds), name="refunds", resolve=lambda n: model)
    with SQLiteStore(tmp_path / "t.db") as store:
        res = await wf.run("refund order A-1", store=store)
        if amount < 100:  # under the limit: no person asked
            assert res.status == "ok" and refunds == [{"order": "A-1", "amount": 40.0}] and res.waiting is None
            return
        assert res.status == "waiting" and refunds == [] and res.text == "Waiting for approval (refunds)."
        item = store.queue_item(res.waiting)
        assert item["kind"] == "approve" and item["context"]["when"] == "250 > 100"
        with pytest.raises(QueueError, match="approval: resolve it with approve or reject"):
            await store.queue.resolve(res.waiting, "ana", route="billing")
        done = await res.resume(by="ana", approved=True)
        assert done.status == "ok" and refunds == [{"order": "A-1", "amount": 250.0}] and done.text == "refunded 250.0 on A-1"


async def test_a_rejected_approval_drops_the_refund(tmp_path):
    refunds: list[dict] = []
    model = FunctionModel(lambda r: json.dumps({"order": "A-2", "amount": 900}))
    wf = Workflow(_refund_workflow(refunds), name="refunds", resolve=lambda n: model)
    with SQLiteStore(tmp_path / "t.db") as store:
        res = await wf.run("refund order A-2", store=store)
        done = await res.resume(by="lead", approved=False, note="over the yearly limit")
        assert done.status == "rejected" and done.text == "No refund: over the yearly limit" and refunds == []
        assert [r.status for r in store.runs()] == ["rejected"]
        assert "pay" not in {s["name"] for s in store.steps(run_id=res.run_id)}


async def test_approve_without_a_store_refuses_and_escalate_without_one_answers_at_once(tmp_path):
    model = FunctionModel(lambda r: json.dumps({"order": "A-3", "amount": 500}))
    res = await Workflow(_refund_workflow([]), name="refunds", resolve=lambda n: model).run("x")
    assert res.status == "error" and "needs a trace store" in res.error
    wf = Workflow.load(write(tmp_path, TRIAGE), models={"local": FunctionModel(lambda r: "hm")})
    res = await wf.run("my order is late")
    assert res.status == "escalated" and res.waiting is None


async def test_claims_lapse_and_are_exclusive_and_a_bad_route_changes_nothing(tmp_path):
    wf = Workflow.load(write(tmp_path, TRIAGE), models={"local": FunctionModel(lambda r: "hm")})
    with SQLiteStore(tmp_path / "t.db") as store:
        res = await wf.run("late order", store=store)
        iid = res.waiting
        with pytest.raises(QueueError, match="'nope' is not a route item .* can take \\(routes: billing, tech\\)"):
            await store.queue.resolve(iid, "ana", route="nope")
        await store.queue.claim(iid, "ana", ttl_s=3600)
        with pytest.raises(QueueError, match="claimed by ana"):
            await store.queue.claim(iid, "bob")
        with pytest.raises(QueueError, match="claimed by ana"):
            await store.queue.resolve(iid, "bob", route="billing")
        store._now("UPDATE escalations SET claim_until = ? WHERE item_id = ?", (1.0, iid))  # the claim lapses
        assert store.queue_item(iid)["status"] == "open"
        with pytest.raises(QueueError, match="your claim on item .* expired"):
            await store.queue.resolve(iid, "ana", route="billing")
        await store.queue.claim(iid, "bob")
        assert store.queue_item(iid)["claimed_by"] == "bob"
        store._now("UPDATE escalations SET expires_at = ? WHERE item_id = ?", (1.0, iid))
        assert store.queue_item(iid)["status"] == "expired"
        with pytest.raises(QueueError, match="expired unresolved"):
            await store.queue.resolve(iid, "bob", route="billing")


async def test_a_changed_workflow_file_is_refused_naming_both_versions_and_the_item_stays_open(tmp_path):
    p = write(tmp_path, TRIAGE)
    wf = Workflow.load(p, models={"local": FunctionModel(lambda r: "hm")})
    with SQLiteStore(tmp_path / "t.db") as store:
        res = await wf.run("late order", store=store)
        p.write_text(TRIAGE.replace('"tech: {input}"', '"technical: {input}"'))
        wf2 = Workflow.load(p, models={"local": FunctionModel(lambda r: "hm")})
        from turnout.workflows.waiting import resolve_and_resume

        with pytest.raises(QueueError) as ei:
            await resolve_and_resume(store, res.waiting, "ana", {"route": "tech"}, lambda st: wf2)
        assert wf.version in str(ei.value) and wf2.version in str(ei.value) and str(p.resolve()) in str(ei.value)
        assert store.queue_item(res.waiting)["status"] == "open" and store.suspended(res.run_id) is not None


def test_two_resumers_race_for_one_run_and_exactly_one_takes_it(tmp_path):
    with SQLiteStore(tmp_path / "t.db") as store:
        rid = store.start_run("wf")
        store.queue_suspend({"queue": "q", "run_id": rid, "step": "s", "kind": "answer", "input": "x", "context": {}, "choices": []},
                            {"workflow": "wf", "version": "v", "journal": {}})
        other = SQLiteStore(tmp_path / "t.db")
        try:
            assert [store.resume_take(rid), other.resume_take(rid)] == [True, False]
            store.resume_release(rid)
            assert other.resume_take(rid) is True
        finally:
            other.close()


async def test_a_new_item_is_posted_to_the_webhook(tmp_path):
    from aiohttp import web

    got: list[dict] = []
    arrived = asyncio.Event()

    async def hook(request):
        got.append(await request.json())
        arrived.set()
        return web.json_response({"ok": True})

    from turnout.testing import serve_app

    webapp = web.Application()
    webapp.router.add_post("/hook", hook)
    async with serve_app(webapp) as url:
        wf = Workflow.load(write(tmp_path, TRIAGE.replace("{escalate: {queue: support,",
                                                          f"{{escalate: {{queue: support, webhook: '{url}/hook',")),
                           models={"local": FunctionModel(lambda r: "hm")})
        with SQLiteStore(tmp_path / "t.db") as store:
            res = await wf.run("late order", store=store)
        await asyncio.wait_for(arrived.wait(), 10)
        assert got[0]["event"] == "escalation.created" and got[0]["item"]["item_id"] == res.waiting
        assert got[0]["item"]["queue"] == "support" and got[0]["item"]["choices"] == ["billing", "tech"]


@pytest.fixture
def mock_catalog(tmp_path, mock_process):
    p = tmp_path / "models.yaml"
    p.write_text(f"models:\n  local:\n    adapter: openai\n    base_url: {mock_process}\n    price: {{input: 1.0, output: 2.0}}\n")
    return p


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnout", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_the_cli_lists_shows_and_resolves_and_the_run_resumes_in_another_process(tmp_path, mock_catalog):
    wf = write(tmp_path, TRIAGE.replace("name: triage\n", "name: triage\ncatalog: models.yaml\n"))
    db = str(tmp_path / "t.db")
    r = _cli("run", str(wf), "--input", "my order is late", "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "waiting" and out["output"].startswith("A person will reply")
    iid, rid = out["waiting"], out["run_id"]
    r = runner.invoke(app, ["queue", "list", "--db", db], env={"COLUMNS": "160"})
    assert r.exit_code == 0 and iid in r.output and "support" in r.output and "route" in r.output
    r = runner.invoke(app, ["queue", "show", iid, "--db", db])
    assert r.exit_code == 0 and "choices: billing, tech" in r.output
    r = runner.invoke(app, ["queue", "resolve", iid, "--by", "ana", "--route", "nope", "--db", db])
    assert r.exit_code == 2 and "'nope' is not a route" in r.output and "Traceback" not in r.output
    r = _cli("queue", "resolve", iid, "--by", "ana", "--route", "billing", "--db", db)
    assert r.returncode == 0, r.stderr
    assert "echo: billing: echo: read my order is late" in r.stdout
    with SQLiteStore(db) as store:
        [run] = store.runs()
        assert run.run_id == rid and run.status == "ok"
        assert len(store.calls(run_id=rid)) == 2 and store.suspended(rid) is None
    r = runner.invoke(app, ["queue", "resolve", iid, "--by", "bob", "--route", "tech", "--db", db])
    assert r.exit_code == 2 and "already resolved by ana" in r.output


KILL_SCRIPT = """
import asyncio, sys
from turnout.store import SQLiteStore
from turnout.workflows import Workflow
async def main():
    wf = Workflow.load(sys.argv[1])
    store = SQLiteStore(sys.argv[2])
    res = await wf.run("my order is late", store=store)
    print(res.status, res.run_id, res.waiting, flush=True)
    sys.stdin.readline()  # held open until the test kills it
asyncio.run(main())
"""


def test_a_kill_9_between_escalation_and_resolution_loses_nothing(tmp_path, mock_catalog):
    wf = write(tmp_path, TRIAGE.replace("name: triage\n", "name: triage\ncatalog: models.yaml\n"))
    db = str(tmp_path / "t.db")
    script = tmp_path / "run_it.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(wf), db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        status, rid, iid = proc.stdout.readline().split()
        assert status == "waiting"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with SQLiteStore(db) as store:
        assert store.queue_item(iid)["status"] == "open" and store.suspended(rid)["item_id"] == iid
    r = _cli("queue", "resolve", iid, "--by", "ana", "--route", "tech", "--db", db)
    assert r.returncode == 0, r.stderr
    with SQLiteStore(db) as store:
        [run] = store.runs()
        assert run.status == "ok" and run.output == "echo: tech: echo: read my order is late"
        assert [c.model for c in store.calls(run_id=rid)].count("local") == 2 or len(store.calls(run_id=rid)) == 2


async def test_a_section_that_asks_waits_after_the_others_and_resumes_only_itself(tmp_path):
    from turnout.routing import Route, RuleRouter
    from turnout.workflows.nodes import SectionStep

    m = Counting()
    router = RuleRouter([Route("ok", keywords=("fine",)), Route("human")], fallback="human", name="r")
    per_section = RouteStep(router, {"ok": Call("ok: {input}"), "human": Escalate("review")}, name="check")
    from turnout.parallel.sectioning import split_items

    wf = Workflow(Sequence([SectionStep(lambda text: split_items(text.splitlines()), per_section, name="sections")]), name="sec",
                  resolve=lambda n: m.model)
    with SQLiteStore(tmp_path / "t.db") as store:
        res = await wf.run("fine one\nodd two\nfine three", store=store)
        assert res.status == "waiting" and sorted(m.prompts) == ["ok: fine one", "ok: fine three"]
        done = await res.resume(by="ana", answer="two is odd")
        assert done.status == "ok" and sorted(m.prompts) == ["ok: fine one", "ok: fine three"]  # the others replayed
        assert "two is odd" in done.text and "ok: fine one" in done.text
