"""A run that waits for a person, and its resumption.

When a step raises ``Suspended`` (``people.py``), ``suspend`` puts the item on its queue and stores
the run's state in the same transaction: the workflow's name, file and version, the run's input,
its journal (every finished step's output, the routers' decisions, the votes' tallies), the
resolutions already applied and what was spent so far. An optional webhook hears of the new item.

``prepare_resume`` checks that the run waits, that its item is resolved and that the workflow is
the version it waited on, then takes the run (a lease: two processes never resume one run) and
builds the context that replays the journal: finished steps return their outputs again without a
call, the step that asked applies the resolution, and the run goes on in the same run row.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import fields, is_dataclass
from typing import Any

from .._errors import QueueError
from .._scope import current_scope
from .._secrets import scrub
from .context import Meter, Node, RunContext, Suspended

__all__ = ["check_version", "node_signature", "notify", "prepare_resume", "resolve_and_resume", "suspend", "version_of"]

log = logging.getLogger("turnout.queue")


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def node_signature(node: Any) -> str:
    """The version of a workflow built in Python: the kinds and names of its steps, in order."""
    parts: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, Node):
            parts.append(f"{v.kind}:{v.name}")
            if is_dataclass(v):
                for f in fields(v):
                    walk(getattr(v, f.name))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                walk(v[k])

    walk(node)
    return "py-" + version_of("|".join(parts).encode())


async def suspend(store: Any, run_id: str, ctx: RunContext, s: Suspended, *, workflow: str, path: str | None,
                  version: str) -> str:
    """Queue the item and store the waiting run's state (one transaction); returns the item id."""
    item = dict(s.item)
    webhook = item.pop("_webhook", None) or os.environ.get("TURNOUT_QUEUE_WEBHOOK")
    item["run_id"] = run_id
    m = ctx.meter
    sc = current_scope()
    journal = {"tags": {k: v for k, v in (("key", sc.key), ("team", sc.team)) if v},"input": ctx.original, "nodes": ctx.journal, "resolutions": ctx.resolutions, "key": s.key,
               "meter": [m.calls, m.errors, m.input_tokens, m.output_tokens, m.cost_usd]}
    state = {"workflow": workflow, "path": path, "version": version, "journal": journal}
    item_id: str = await asyncio.to_thread(store.queue_suspend, item, state)
    ctx.escalations.append({"queue": item["queue"], "input": item["input"], "step": item["step"], "item": item_id, "status": "waiting"})
    if webhook:
        await notify(webhook, {**item, "item_id": item_id})
    return item_id


async def notify(url: str, item: dict[str, Any], *, timeout: float = 5.0) -> bool:
    """POST ``{"event": "escalation.created", "item": ...}`` to ``url``; a failure is logged, never raised."""
    import aiohttp

    body = {"event": "escalation.created", "item": {k: (scrub(v) if isinstance(v, str) else v) for k, v in item.items()}}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, s.post(url, json=body) as r:
            if r.status >= 400:
                log.warning("turnout queue webhook %s answered %d for item %s", scrub(url), r.status, item.get("item_id"))
                return False
            return True
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        log.warning("turnout queue webhook %s failed for item %s: %s", scrub(url), item.get("item_id"), scrub(str(e)) or type(e).__name__)
        return False


def check_version(st: dict[str, Any], wf: Any) -> None:
    """The workflow ``wf`` is the one, in the version, that the waiting run ``st`` waited in."""
    run_id = st["run_id"]
    if st["workflow"] != wf.name:
        raise QueueError(f"run {run_id!r} is a run of workflow {st['workflow']!r}, not {wf.name!r}")
    if st["version"] != wf.version:
        raise QueueError(f"workflow {wf.name!r} changed since run {run_id!r} began waiting: it waited on version {st['version']}"
                         f"{' of ' + st['path'] if st['path'] else ''}, the workflow is now version {wf.version}; restore that "
                         "version to resume it (the item stays open), or answer the caller another way", conflict=True)


async def prepare_resume(store: Any, run_id: str, wf: Any) -> tuple[RunContext, str, dict[str, str]]:
    """The context a resumed run replays from, and its item id; the run is taken (a lease) — the
    caller runs it, then ``store.resume_done`` (or ``resume_release`` if it could not run)."""
    st = await asyncio.to_thread(store.suspended, run_id)
    if st is None:
        raise QueueError(f"run {run_id!r} is not waiting (it has resumed already, or never waited on a person)")
    item = await asyncio.to_thread(store.queue_item, st["item_id"])
    if item is None or item["status"] != "resolved":
        status = item["status"] if item is not None else "gone"
        raise QueueError(f"run {run_id!r} waits on item {st['item_id']!r}, which is {status}: resolve it first "
                         f"(turnout queue resolve {st['item_id']})")
    check_version(st, wf)
    if not await asyncio.to_thread(store.resume_take, run_id):
        raise QueueError(f"run {run_id!r} is being resumed by another process", conflict=True)
    j = st["journal"]
    ctx = RunContext(wf.resolve, wf.default_model, original=j["input"])
    ctx.replay = dict(j["nodes"])
    ctx.resolutions = dict(j["resolutions"])
    ctx.resolutions[j["key"]] = {**item["resolution"], "item_id": item["item_id"], "by": item["resolved_by"],
                                 "waited_s": round((item["resolved_at"] or time.time()) - item["created_at"], 3)}
    m = ctx.meter = Meter()
    m.calls, m.errors, m.input_tokens, m.output_tokens, m.cost_usd = j["meter"]
    return ctx, st["item_id"], dict(j.get("tags") or {})


async def resolve_and_resume(store: Any, item_id: str, by: str, resolution: dict[str, Any], workflow_for: Any) -> tuple[dict[str, Any], Any]:
    """Resolve an item and resume the run waiting on it: ``(item, RunResult | None)``. The workflow
    (``workflow_for(state)``) is checked against the version the run waited on *before* the item is
    resolved, so a refusal leaves the item open. None when no run waits on the item any more."""
    from ..store import check_resolution

    item = await asyncio.to_thread(store.queue_item, item_id)
    if item is None:
        raise QueueError(f"no escalation item {item_id!r} in this store")
    check_resolution(item, resolution)  # a route that does not exist is refused before anything changes
    st = await asyncio.to_thread(store.suspended, item["run_id"])
    wf = None
    if st is not None and st["item_id"] == item_id:
        wf = workflow_for(st)
        check_version(st, wf)
    item = await asyncio.to_thread(store.queue_resolve, item_id, by, resolution)
    if wf is None:
        return item, None
    return item, await wf.resume(item["run_id"], store=store)
