"""``turnout queue``: the escalation queue — what waits for a person, and the answers that resume runs.

    turnout queue list [--queue support] [--status open]
    turnout queue show ITEM
    turnout queue claim ITEM --by ana [--ttl 900]
    turnout queue resolve ITEM --by ana (--route billing | --answer TEXT | --approve | --reject) [--note ...]
    turnout queue resume RUN_ID

``resolve`` resumes the run that waits on the item (loading its workflow file, the version it waited
on) and prints its output; ``--no-resume`` only records the resolution (``resume`` later).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._errors import QueueError
from ._common import CatalogOpt, DbOpt, err_console, friendly_errors, load_catalog

app = typer.Typer(no_args_is_help=True, help="The escalation queue: list, show, claim and resolve what waits for a person.")


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0.0, time.time() - t)
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.1f}h ago"


def _top(item: dict[str, Any]) -> str:
    c = item.get("context") or {}
    if c.get("scores"):
        return ", ".join(f"{k} {v:.2f}" for k, v in list(c["scores"].items())[:3])
    if c.get("tally"):
        return ", ".join(f"{k!s:.20} ×{v:g}" for k, v in list(c["tally"].items())[:3])
    return c.get("when") or c.get("reason") or ""


@app.command("list")
def list_(
    queue: str | None = typer.Option(None, "--queue", "-q", help="Only this queue."),
    status: str = typer.Option("open", "--status", "-s", help="open, claimed, resolved, expired or all."),
    limit: int = typer.Option(50, "--limit", "-n"),
    db: str | None = DbOpt,
) -> None:
    """The items waiting for a person (oldest first), with what the system knew."""
    from ..store import open_store

    with friendly_errors(), open_store(db, strict=True, existing=True) as store:
        items = store.queue_items(queue=queue, status=None if status == "all" else status, limit=limit)
    t = Table(title=f"escalations ({status})", show_lines=False)
    for col in ("item", "queue", "kind", "status", "input", "the system knew", "created", "who"):
        t.add_column(col, overflow="fold", max_width=48 if col == "input" else None, no_wrap=col in ("item", "queue", "kind", "status", "created"))
    for i in items:
        who = i["resolved_by"] or (i["claimed_by"] if i["status"] == "claimed" else "") or ""
        t.add_row(i["item_id"], i["queue"], i["kind"], i["status"], escape((i["input"] or "")[:140]), escape(_top(i)),
                  _ago(i["created_at"]), escape(who))
    Console(highlight=False).print(t if items else f"no {status} items" + (f" on queue {queue!r}" if queue else ""))


@app.command("show")
def show(item_id: str = typer.Argument(..., help="The item id (from `turnout queue list`)."), db: str | None = DbOpt,
         as_json: bool = typer.Option(False, "--json")) -> None:
    """One item: the input, the router's top routes and scores or the vote's tally, the choices."""
    from ..store import open_store

    with friendly_errors(), open_store(db, strict=True, existing=True) as store:
        it = store.queue_item(item_id)
        if it is None:
            raise QueueError(f"no escalation item {item_id!r} in {store.path}")
    if as_json:
        print(json.dumps(it, ensure_ascii=False, default=str))
        return
    c = Console(highlight=False)
    t = Table(show_header=False, box=None)
    t.add_column(style="dim")
    t.add_column(overflow="fold")
    for k in ("item_id", "queue", "kind", "status", "run_id", "step", "workflow", "team", "claimed_by", "resolved_by"):
        if it.get(k):
            t.add_row(k, escape(str(it[k])))
    t.add_row("created", _ago(it["created_at"]))
    if it["resolution"]:
        t.add_row("resolution", escape(json.dumps(it["resolution"], ensure_ascii=False)))
    c.print(t)
    c.print("[bold]input[/]")
    c.print(escape(it["input"] or ""))
    ctx = it.get("context") or {}
    if ctx.get("scores"):
        s = Table(title=f"router {ctx.get('router') or ''}: {ctx.get('outcome', '')} ({ctx.get('reason', '')})")
        s.add_column("route")
        s.add_column("score", justify="right")
        for k, v in ctx["scores"].items():
            s.add_row(escape(k), f"{v:.3f}")
        c.print(s)
    if ctx.get("tally"):
        s = Table(title=f"vote: agreement {ctx.get('agreement')}")
        s.add_column("answer")
        s.add_column("votes", justify="right")
        for k, v in ctx["tally"].items():
            s.add_row(escape(str(k)), f"{v:g}")
        c.print(s)
    if it["choices"]:
        c.print("choices: " + ", ".join(escape(x) for x in it["choices"]))


@app.command("claim")
def claim(item_id: str = typer.Argument(...), by: str = typer.Option(..., "--by", help="Who takes it."),
          ttl: float = typer.Option(900.0, "--ttl", help="Seconds the claim holds."), db: str | None = DbOpt) -> None:
    """Take an item so nobody else works it (the claim lapses after --ttl seconds)."""
    from ..store import open_store

    with friendly_errors(), open_store(db, strict=True, existing=True) as store:
        it = store.queue_claim(item_id, by, ttl_s=ttl)
    Console(highlight=False).print(f"claimed {escape(item_id)} for {escape(by)} until "
                                   f"{time.strftime('%H:%M:%S', time.localtime(it['claim_until']))}")


def _workflow_for(catalog: Path | None) -> Any:
    def load(state: dict[str, Any]) -> Any:
        from .._errors import ConfigError
        from ..workflows import Workflow

        if not state.get("path"):
            raise QueueError(f"run {state['run_id']!r} is a workflow built in Python: resume it with Workflow.resume(...)")
        p = Path(state["path"])
        if not p.exists():
            raise QueueError(f"run {state['run_id']!r} waits in workflow {p}, which is gone")
        try:
            return Workflow.load(p, catalog=load_catalog(catalog) if catalog else None)
        except ConfigError as e:
            raise QueueError(f"cannot load the waiting run's workflow: {e}") from None
    return load


def _print_run(res: Any) -> None:
    from .workflow import _summary_table

    Console(highlight=False).print(escape(res.text))
    err_console.print(_summary_table(res))


@app.command("resolve")
def resolve(
    item_id: str = typer.Argument(...),
    by: str = typer.Option(..., "--by", help="Who resolves it (recorded)."),
    route: str | None = typer.Option(None, "--route", "-r", help="The route to run (a routing item)."),
    answer: str | None = typer.Option(None, "--answer", "-a", help="The answer: becomes the step's output."),
    approve: bool = typer.Option(False, "--approve", help="Approve (an approval item)."),
    reject: bool = typer.Option(False, "--reject", help="Reject (an approval item)."),
    note: str | None = typer.Option(None, "--note", help="Why (a rejection's reason)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Only record the resolution."),
    db: str | None = DbOpt,
    catalog: Path | None = CatalogOpt,
) -> None:
    """Resolve an item (once) and resume the run that waits on it, from the step that asked."""
    from ..store import open_store
    from ..workflows.waiting import resolve_and_resume

    with friendly_errors():
        if approve and reject:
            raise QueueError("give --approve or --reject, not both")
        res_in = {"route": route, "answer": answer, "approved": True if approve else False if reject else None, "note": note}
        with open_store(db, strict=True, existing=True) as store:
            if no_resume:
                store.queue_resolve(item_id, by, res_in)
                Console().print(f"resolved {escape(item_id)} (the run waits: turnout queue resume)")
                return
            item, res = asyncio.run(_resolve(store, item_id, by, res_in, _workflow_for(catalog), resolve_and_resume))
        Console(highlight=False).print(f"[green]resolved[/] {escape(item_id)} by {escape(by)}: "
                                       f"{escape(json.dumps(item['resolution'], ensure_ascii=False))}")
        if res is not None:
            _print_run(res)


async def _resolve(store: Any, item_id: str, by: str, res_in: dict[str, Any], load: Any, fn: Any) -> Any:
    wfs: list[Any] = []

    def keep(st: dict[str, Any]) -> Any:
        wfs.append(load(st))
        return wfs[-1]
    try:
        return await fn(store, item_id, by, res_in, keep)
    finally:
        for wf in wfs:
            await wf.aclose()


@app.command("resume")
def resume(run_id: str = typer.Argument(..., help="A run waiting on a resolved item."), db: str | None = DbOpt,
           catalog: Path | None = CatalogOpt) -> None:
    """Resume a run whose item was resolved with --no-resume (or whose resume was interrupted)."""
    from ..store import open_store

    with friendly_errors(), open_store(db, strict=True, existing=True) as store:
        st = store.suspended(run_id)
        if st is None:
            raise QueueError(f"run {run_id!r} is not waiting (it has resumed already, or never waited on a person)")
        wf = _workflow_for(catalog)({**st, "run_id": run_id})

        async def go() -> Any:
            try:
                return await wf.resume(run_id, store=store)
            finally:
                await wf.aclose()
        res = asyncio.run(go())
    _print_run(res)
