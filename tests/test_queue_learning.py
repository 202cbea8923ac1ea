"""The loop that learns: resolved routing items become examples, the escalation cut comes down only
where out-of-fold answers hold, and the report compares escalation rates around the refit."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from turnout.cli import app
from turnout.errors import QueueError
from turnout.routing import Route, SemanticRouter
from turnout.routing.learn import fit_from_queue
from turnout.store import SQLiteStore
from turnout.testing import FakeEmbedder

runner = CliRunner()


def _router(escalate_below: float = 0.9) -> SemanticRouter:
    return SemanticRouter([Route("billing", utterances=("invoice charge payment refund",)),
                           Route("tech", utterances=("crash error bug login",)), Route("human")],
                          FakeEmbedder(), escalation="human", escalate_below=escalate_below, temperature=0.2, name="triage")


def _resolved(store: SQLiteStore, pairs: list[tuple[str, str]], *, router: str | None = "triage") -> None:
    for text, route in pairs:
        rid = store.start_run("wf", text)
        iid = store.queue_suspend({"queue": "support", "run_id": rid, "step": "escalate", "kind": "route", "input": text,
                                   "context": {}, "choices": ["billing", "tech"], "router": router},
                                  {"workflow": "wf", "version": "v", "journal": {}})
        store.queue_resolve(iid, "ana", {"route": route})


PAIRS = [(f"my invoice number {i} was charged twice", "billing") for i in range(12)] + \
        [(f"the app shows error {i} on login", "tech") for i in range(12)]


async def test_resolved_items_become_examples_and_the_fit_is_recorded(tmp_path):
    r = _router()
    with SQLiteStore(tmp_path / "t.db") as store:
        with pytest_raises_queue("no resolved routing items"):
            await fit_from_queue(r, store)
        _resolved(store, PAIRS)
        _resolved(store, [("a stranger's item", "tech")], router="another-router")  # not this router's: not learnt
        rep = await fit_from_queue(r, store, queue="support")
        assert rep.examples == 24 and rep.added == {"billing": 12, "tech": 12}
        assert "my invoice number 3 was charged twice" in r.routes["billing"].utterances
        assert "a stranger's item" not in r.routes["tech"].utterances
        old, new = rep.escalate_below
        assert old == 0.9 and new <= old and r.escalate_below == new
        assert rep.out_of_fold["items"] > 0 and (new == old or rep.out_of_fold["accuracy_now_answered"] >= 0.9)
        [f] = store.fits()
        assert f["router"] == "triage" and f["examples"] == 24 and f["source"] == "queue:support"


def pytest_raises_queue(match: str):
    import pytest

    return pytest.raises(QueueError, match=match)


async def test_the_cut_is_chosen_out_of_fold_never_on_a_router_that_learnt_the_item(tmp_path, monkeypatch):
    r = _router()
    seen: list[tuple[set[str], list[str]]] = []
    real = SemanticRouter.decisions

    async def spy(self, xs):
        seen.append(({u for rt in self.scored for u in rt.utterances}, list(xs)))
        return await real(self, xs)

    monkeypatch.setattr(SemanticRouter, "decisions", spy)
    with SQLiteStore(tmp_path / "t.db") as store:
        _resolved(store, PAIRS)
        await fit_from_queue(r, store, folds=4)
    assert len(seen) == 4 and sum(len(xs) for _, xs in seen) == 24  # every item decided once, out of fold
    for examples, xs in seen:
        assert not examples & set(xs)  # no item is among the examples of the router deciding it


def test_route_fit_from_queue_writes_the_learnt_examples_and_report_by_queue(tmp_path):
    spec = tmp_path / "router.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "triage", "router": "semantic", "embedder": "local-minilm", "escalation": "human", "escalate_below": 0.9,
        "routes": {"billing": {"utterances": ["I was charged twice", "send me my invoice"]},
                   "tech": {"utterances": ["the app crashes", "I get an error"]}, "human": {"description": "a person"}}}))
    db = str(tmp_path / "t.db")
    with SQLiteStore(db) as store:
        _resolved(store, PAIRS, router=None)
        for _ in range(3):
            store.record_decision(_decision(), router="triage")
    r = runner.invoke(app, ["route", "fit", str(spec), "--from-queue", "--db", db, "-o", str(tmp_path / "fitted.yaml")])
    assert r.exit_code == 0, r.output
    assert "learnt 24 labelled items" in r.output and "billing +12" in r.output
    fitted = yaml.safe_load((tmp_path / "fitted.yaml").read_text())
    assert "the app shows error 5 on login" in fitted["routes"]["tech"]["utterances"]
    assert fitted["escalate_below"] <= 0.9
    r = runner.invoke(app, ["route", "fit", str(spec), "--db", db, "-o", str(tmp_path / "x.yaml")])
    assert r.exit_code == 2 and "give a TRAIN file or --from-queue" in r.output
    r = runner.invoke(app, ["report", "--by", "queue", "--db", db], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "support" in r.output and "24" in r.output and "resolved 24" in r.output


def _decision():
    from turnout.routing.base import Decision

    return Decision("billing", 0.95, {"billing": 0.9}, "semantic", "ok", 0.0, "matched", "billing", "triage")
