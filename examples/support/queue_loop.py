"""The loop from escalation to a better router, measured on the support set with the embedded MiniLM:

1. route held-out messages (B) with the semantic router: the unsure ones (confidence under
   ``escalate_below``) wait on the ``support`` queue — escalation rate and accuracy of the answered;
2. route other messages (A): their escalations are resolved by a "person" (their true label), and
   each waiting run resumes on the route chosen;
3. refit the router from the queue (``fit_from_queue``: the labelled items become examples,
   thresholds fitted on a held-out share of them);
4. route B again: escalation rate and accuracy of the answered, after.

B is never learnt from (no score on rows the fit saw); the two halves swap roles and both folds
are reported. Run: ``python examples/support/queue_loop.py [--escalate-below 0.5]``.
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
    return {"n": len(rows), "escalated": sum(asked), "escalation_rate": sum(asked) / len(rows),
            "answered": len(answered), "accuracy_answered": correct / len(answered) if answered else 0.0, "results": results}


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
    ap.add_argument("--escalate-below", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--target", type=float, default=0.9, help="accuracy the newly answered must keep, out of fold")
    ap.add_argument("--with-train", action="store_true", help="route train.jsonl too before refitting (more traffic, more items)")
    ap.add_argument("--scoring", default=None, help="centroid, nearest or hybrid (default: the router file's)")
    args = ap.parse_args()
    spec = load_spec(HERE / "router.yaml")
    rows = [r for r in load_jsonl(HERE / "test.jsonl", routes=list(spec.routes))]
    random.Random(args.seed).shuffle(rows)
    a, b = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    traffic = load_jsonl(HERE / "train.jsonl", routes=list(spec.routes)) if args.with_train else []
    folds = [await fold(traffic + a, b, args.escalate_below, args.scoring, args.target),
             await fold(traffic + b, a, args.escalate_below, args.scoring, args.target)]
    for i, f in enumerate(folds, 1):
        bf, af = f["before"], f["after"]
        print(f"fold {i}: {f['stream_escalated']} escalations resolved, {f['learnt']} learnt, escalate_below "
              f"{f['escalate_below'][0]:.2f} -> {f['escalate_below'][1]:.3f}; on {bf['n']} held-out "
              f"messages: escalation rate {bf['escalation_rate']:.1%} -> {af['escalation_rate']:.1%}, accuracy of the answered "
              f"{bf['accuracy_answered']:.1%} -> {af['accuracy_answered']:.1%}")
    print(json.dumps(folds))


if __name__ == "__main__":
    asyncio.run(main())
