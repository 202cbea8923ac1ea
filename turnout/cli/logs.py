"""``turnout logs``: the last runs in the trace store — what was asked and what was answered.

    turnout logs                       the last 10 runs, newest last, texts cut at 300 characters
    turnout logs -n 3 --full           whole texts
    turnout logs --json                one JSON object per line (models, routes, tags, usage)
    turnout logs -w chat --cid ID      one conversation of `turnout chat`
    turnout logs -q refund --since 1d  runs whose input mentions "refund", in the last day
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from ._common import DbOpt, friendly_errors

_CUT = 300
_SCAN = 5000  # runs read at most to satisfy the conversation and model filters: a bounded read


def logs(
    count: int = typer.Option(10, "--count", "-n", min=1, help="How many runs (the newest)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per run, per line."),
    full: bool = typer.Option(False, "--full", help="Whole input and output texts (default: cut at 300 characters)."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Only this workflow (chat, gateway, a workflow's name)."),
    status: str | None = typer.Option(None, "--status", help="Only runs in this status (ok, error, waiting, running)."),
    search: str = typer.Option("", "--search", "-q", help="A run id prefix, or words in the run's input."),
    since: str | None = typer.Option(None, "--since", help="Only the last 30m / 12h / 1d / 2w."),
    key: str | None = typer.Option(None, "--key", help="Only runs of this gateway key id."),
    team: str | None = typer.Option(None, "--team", help="Only runs of this team."),
    conversation: str | None = typer.Option(None, "--cid", help="Only this `turnout chat` conversation."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only runs that called this model."),
    db: str | None = DbOpt,
) -> None:
    """What was asked and answered: the newest runs with their model, routes, cost and texts."""
    from ..reports.tables import parse_since
    from ..store import open_store

    with friendly_errors(), open_store(db, strict=True, existing=True) as store:
        want = {"conversation": conversation} if conversation else {}
        scan = _SCAN if want or model else count  # key and team are indexed columns: only these two read further
        rows = store.search_runs(search, workflow=workflow, status=status, since=parse_since(since), limit=scan, scan=_SCAN, key=key,
                                 team=team)
        picked: list[dict[str, Any]] = []
        for r in rows:
            if any(r.tags.get(k) != v for k, v in want.items()):
                continue
            d = _detail(store, r)
            if model and model not in d["models"]:
                continue
            picked.append(d)
            if len(picked) == count:
                break
    picked.reverse()  # oldest first: the newest run is the last thing on the screen
    if as_json:
        for d in picked:
            print(json.dumps(d, ensure_ascii=False))
        return
    out = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
    if not picked:
        out.print("[dim]no runs match[/]")
    for d in picked:
        _print(out, d, full)


def _detail(store: Any, r: Any) -> dict[str, Any]:
    calls = store.calls(run_id=r.run_id)
    routes = [{"router": x.router, "route": x.route, "confidence": round(x.confidence, 4), "outcome": x.outcome}
              for x in store.decisions(run_id=r.run_id)]
    return {"run_id": r.run_id, "workflow": r.workflow, "status": r.status,
            "started_at": _dt.datetime.fromtimestamp(r.started_at, _dt.UTC).isoformat(timespec="seconds"),
            "latency_s": round(r.latency_s, 3), "cost_usd": round(r.cost_usd, 8), "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens, "models": sorted({c.model for c in calls}), "calls": len(calls), "routes": routes,
            "tags": dict(r.tags), "input": r.input, "output": r.output}


def _print(out: Console, d: dict[str, Any], full: bool) -> None:
    def cut(s: str | None) -> str:
        s = s or ""
        return s if full or len(s) <= _CUT else s[:_CUT] + f"… ({len(s)} characters; --full)"

    tags = d["tags"]
    who = " ".join(f"{k} {tags[k]}" for k in ("key", "team", "conversation") if tags.get(k))
    routes = ", ".join(f"{x['route']} ({x['confidence']:.2f})" for x in d["routes"])
    colour = "green" if d["status"] == "ok" else "red" if d["status"] == "error" else "yellow"
    out.print(f"[bold]{escape(d['started_at'])}[/] [dim]{d['run_id']}[/] {escape(d['workflow'])} [{colour}]{escape(d['status'])}[/] "
              f"· {escape(', '.join(d['models']) or 'no model call')} · ${d['cost_usd']:.6f} · {d['latency_s']:.2f}s"
              + (f" · route {escape(routes)}" if routes else "") + (f" · {escape(who)}" if who else ""))
    out.print(f"[cyan]>[/] {escape(cut(d['input']))}")
    out.print(f"{escape(cut(d['output']))}\n")
