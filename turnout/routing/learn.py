"""The loop that learns: every resolved routing item of the escalation queue is a labelled example
(the input a router was unsure of, the route a person chose). ``fit_from_queue`` adds them to the
semantic router's examples and lowers its escalation cut where, out of fold, the router taught the
other items would have answered these right — so the fit never scores an item on a router that
learnt from it — then records the refit in the store (``turnout report --by queue`` compares
escalation rates before and after it)."""

from __future__ import annotations

import asyncio
import copy
import random
from dataclasses import dataclass, field
from typing import Any

from .._errors import QueueError
from .base import Router
from .fitting import precision_cut
from .semantic import SemanticRouter

__all__ = ["QueueFit", "fit_from_queue", "queue_examples"]


@dataclass
class QueueFit:
    examples: int  # labelled items taken from the queue (distinct inputs)
    added: dict[str, int] = field(default_factory=dict)  # per route
    escalate_below: tuple[float, float] = (0.0, 0.0)  # before, after
    out_of_fold: dict[str, float] = field(default_factory=dict)  # the cross-fitted evidence for the new cut


def queue_examples(items: list[dict[str, Any]], routes: set[str], routers: set[str] | None = None) -> list[tuple[str, str]]:
    """(input, route) of the resolved routing items (of one of ``routers`` when given, or of no
    recorded router), one per distinct input."""
    seen: dict[str, str] = {}
    for it in items:
        res = it.get("resolution") or {}
        if it.get("kind") != "route" or it.get("status") != "resolved" or res.get("route") not in routes or not it.get("input"):
            continue
        if routers is not None and it.get("router") is not None and it["router"] not in routers:
            continue
        seen[it["input"]] = res["route"]  # the latest resolution of an input wins
    return list(seen.items())


async def _out_of_fold(sem: SemanticRouter, pairs: list[tuple[str, str]], folds: int) -> list[tuple[float, bool]]:
    """(confidence, correct) of each item, decided by the router taught every *other* fold's items."""
    out: list[tuple[float, bool]] = []
    for k in range(folds):
        test = pairs[k::folds]
        if not test:
            continue
        c = copy.copy(sem)
        c.scored, c.routes, c._ready = list(sem.scored), dict(sem.routes), False
        c.add_examples([p for i, p in enumerate(pairs) if i % folds != k])
        for d, (_, y) in zip(await c.decisions([x for x, _ in test]), test, strict=True):
            if d.chosen is not None:
                out.append((d.confidence, d.chosen == y))
    return out


async def fit_from_queue(router: Router, store: Any, *, queue: str | None = None, target_accuracy: float = 0.9, folds: int = 5,
                         min_support: int = 5, seed: int = 0) -> QueueFit:
    """Refit ``router``'s semantic stage (a ``SemanticRouter``, or a cascade's) from the queue, in place:
    the resolved items become examples of the routes people chose, and ``escalate_below`` comes down
    to where the items the router would now answer were right ``target_accuracy`` of the time —
    measured out of fold (each item decided by the router taught the other folds), never on an
    item among the examples deciding it."""
    from .config import semantic_of

    sem = semantic_of(router)
    if sem is None:
        raise QueueError(f"router {getattr(router, 'name', '?')!r} has no semantic stage to learn examples into")
    items = await asyncio.to_thread(store.queue_items, queue=queue, status="resolved", limit=10**9)
    pairs = queue_examples(items, set(sem.scored_names), {getattr(router, "name", sem.name), sem.name})
    if not pairs:
        raise QueueError(f"no resolved routing items{' on queue ' + repr(queue) if queue else ''} to learn from")
    random.Random(seed).shuffle(pairs)
    old = sem.escalate_below
    out = QueueFit(len(pairs), escalate_below=(old, old))
    if old > 0 and len(pairs) >= 2 * folds:
        oof = await _out_of_fold(sem, pairs, folds)
        new = precision_cut(oof, target_accuracy, ceiling=old, min_support=min_support)
        answered = [ok for c, ok in oof if c >= new]
        out.out_of_fold = {"items": len(oof), "now_answered": len(answered),
                           "accuracy_now_answered": round(sum(answered) / len(answered), 4) if answered else 0.0}
        sem.escalate_below = new
        out.escalate_below = (old, new)
    sem.add_examples(pairs)
    for _, y in pairs:
        out.added[y] = out.added.get(y, 0) + 1
    await asyncio.to_thread(store.record_fit, getattr(router, "name", sem.name), source=f"queue:{queue or '*'}", examples=len(pairs),
                            detail={"added": out.added, "escalate_below": list(out.escalate_below), "out_of_fold": out.out_of_fold})
    return out
