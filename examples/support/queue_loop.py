"""The loop from escalation to a better router, measured on the support set with the embedded MiniLM:

1. route held-out messages (B) with the semantic router: the unsure ones (confidence under
   ``escalate_below``) wait on the ``support`` queue — escalation rate and accuracy of the answered;
2. route other messages (A): their escalations are resolved by a "person" (their true label), and
   each waiting run resumes on the route chosen;
3. refit the router from the queue (``fit_from_queue``: the labelled items become examples,
   thresholds fitted on a held-out share of them);
4. route B again: escalation rate and accuracy of the answered, after.

B is never learnt from (no score on rows the fit saw); A is half of test.jsonl plus train.jsonl
(the traffic before a refit). The halves swap roles, over several random splits, and every fold is
reported. Run: ``python examples/support/queue_loop.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.routing.config import build_router, load_spec
from turnout.routing.evaluate import load_jsonl
from turnout.routing.learn import fit_from_queue
from turnout.store import SQLiteStore
from turnout.workflows import Workflow
from turnout.workflows.context import Node, RunContext
from turnout.workflows.nodes import RouteStep
from turnout.workflows.people import Escalate
from turnout.workflows.sequence import Sequence

HERE = Path(__file__).parent


@dataclass
class Handled(Node):
    """A team's handler, reduced to saying which team took the message (no model call)."""

    team: str = ""
    name: str = ""
    kind: str = "handler"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        return self.team


async def route_all(wf: Workflow, store: SQLiteStore, rows: list[Any]) -> dict[str, Any]:
    results = [await wf.run(r.input, store=store) for r in rows]
    asked = [res.status == "waiting" for res in results]
    answered = [(res, r) for res, r, a in zip(results, rows, asked, strict=True) if not a]
    correct = sum(res.output == r.label for res, r in answered)
    return {"n": len(rows), "escalated": sum(asked), "answered": len(answered), "right": correct, "results": results}


async def fold(stream: list[Any], held: list[Any], escalate_below: float, scoring: str | None = None, target: float = 0.9) -> dict[str, Any]:
    spec = load_spec(HERE / "router.yaml").model_copy(update={"router": "semantic", "escalate_below": escalate_below})
    if scoring:
        spec = spec.model_copy(update={"semantic": spec.semantic.model_copy(update={"scoring": scoring})})
    router = build_router(spec)
    teams = [n for n in spec.routes if n != spec.escalation]
    targets: dict[str, Node] = {n: Handled(team=n, name=n) for n in teams}
    targets[spec.escalation] = Escalate("support", message="A person will reply.")
    wf = Workflow(Sequence([RouteStep(router, targets, name="triage")]), name="support-loop")
    with tempfile.TemporaryDirectory() as d, SQLiteStore(Path(d) / "loop.db") as store:
        before = await route_all(wf, store, held)
        streamed = await route_all(wf, store, stream)
        resolved = 0
        for res, row in zip(streamed["results"], stream, strict=True):
            if res.status == "waiting" and row.label in teams:
                done = await res.resume(by="person", route=row.label)  # the person knows the right team
                assert done.status == "ok" and done.output == row.label
                resolved += 1
        fit = await fit_from_queue(router, store, queue="support", target_accuracy=target)
        after = await route_all(wf, store, held)
    return {"stream_escalated": streamed["escalated"], "resolved": resolved, "learnt": fit.examples, "escalate_below": fit.escalate_below, "out_of_fold": fit.out_of_fold,
            "before": {k: v for k, v in before.items() if k != "results"}, "after": {k: v for k, v in after.items() if k != "results"}}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--escalate-below", type=float, default=0.8)
    ap.add_argument("--target", type=float, default=0.9, help="accuracy the answered hard items must keep, out of fold")
    ap.add_argument("--scoring", default="hybrid", help="centroid, nearest or hybrid")
    ap.add_argument("--no-train", action="store_true", help="route only half of test.jsonl before refitting (fewer items)")
    ap.add_argument("--seeds", type=int, default=5, help="splits of test.jsonl (each run as two folds)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    spec = load_spec(HERE / "router.yaml")
    rows = load_jsonl(HERE / "test.jsonl", routes=list(spec.routes))
    traffic = [] if args.no_train else load_jsonl(HERE / "train.jsonl", routes=list(spec.routes))
    folds = []
    for seed in range(args.seeds):
        shuffled = list(rows)
        random.Random(seed).shuffle(shuffled)
        a, b = shuffled[: len(rows) // 2], shuffled[len(rows) // 2 :]
        for stream, held in ((a, b), (b, a)):
            f = await fold(traffic + stream, held, args.escalate_below, args.scoring, args.target)
            folds.append(f)
            bf, af = f["before"], f["after"]
            print(f"split {seed} fold {len(folds)}: {f['stream_escalated']} items resolved and learnt, escalate_below "
                  f"{f['escalate_below'][0]:.2f} -> {f['escalate_below'][1]:.3f}; on {bf['n']} held-out messages: escalated "
                  f"{bf['escalated']} -> {af['escalated']}, right among the answered {bf['right']}/{bf['answered']} -> "
                  f"{af['right']}/{af['answered']}")
    tot = {k: sum(f[p][k] for f in folds) for p in ("before", "after") for k in ("n", "escalated", "answered", "right")}
    n = sum(f["before"]["n"] for f in folds)
    b_esc, a_esc = sum(f["before"]["escalated"] for f in folds), sum(f["after"]["escalated"] for f in folds)
    b_ans, a_ans = sum(f["before"]["answered"] for f in folds), sum(f["after"]["answered"] for f in folds)
    b_ok, a_ok = sum(f["before"]["right"] for f in folds), sum(f["after"]["right"] for f in folds)
    print(f"all {len(folds)} folds ({n} held-out decisions each way): escalation rate {b_esc / n:.1%} -> {a_esc / n:.1%} "
          f"({a_esc / max(b_esc, 1):.2f}x), accuracy of the answered {b_ok / b_ans:.1%} -> {a_ok / a_ans:.1%}")
    if args.json:
        print(json.dumps({"folds": folds, "total": tot}))


if __name__ == "__main__":
    asyncio.run(main())
