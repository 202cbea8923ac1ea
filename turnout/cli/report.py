"""``turnout report``: what the trace store holds, by model or by route."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._errors import ConfigError
from ._common import CatalogOpt, DbOpt, err_console, friendly_errors, load_catalog


def render_table(by: str, rows: list[dict[str, Any]], since: str | None = None) -> Table:
    """The report's rich table for ``--by`` (model, route, vote, workflow)."""
    if by == "model":
        t = Table(title=f"model calls{' since ' + since if since else ''}", title_justify="left")
        cols = [("model", "model"), ("calls", "calls"), ("in tokens", "input_tokens"), ("out tokens", "output_tokens"),
                ("cost $", "cost_usd"), ("p50 ms", "latency_p50_ms"), ("p95 ms", "latency_p95_ms"),
                ("errors", "error_rate"), ("retries", "retries"), ("fallbacks", "fallback_rate")]
        if any(r.get("cache_hit_rate") for r in rows):
            cols += [("cache hits", "cache_hit_rate"), ("saved $", "saved_usd")]
        if any("budget" in r for r in rows):
            cols.append(("budget", "budget"))
    elif by == "audit":
        t = Table(title=f"compliance audit{' since ' + since if since else ''}: what each model was sent", title_justify="left")
        cols = [("model", "model"), ("data class", "data_class"), ("sent", "sent"), ("redacted", "redacted"), ("refused", "refused")]
    elif by == "vote":
        t = Table(title=f"voting{' since ' + since if since else ''}", title_justify="left")
        cols = [("name", "name"), ("verdicts", "verdicts"), ("mean agreement", "mean_agreement"), ("low agreement", "low_agreement"),
                ("samples used", "samples_used"), ("planned", "samples_planned"), ("saved", "samples_saved"), ("outcomes", "outcomes")]
    elif by == "queue":
        t = Table(title="escalation queues (escalation rate: decisions whose run asked a person, before/after the last refit)",
                  title_justify="left")
        cols = [("queue", "queue"), ("items", "items"), ("status", "status"), ("resolve p50 s", "resolve_p50_s"),
                ("p90 s", "resolve_p90_s"), ("router", "router"), ("escalated before refit", "escalation_before"),
                ("after", "escalation_after")]
    elif by == "workflow":
        t = Table(title=f"workflow runs{' since ' + since if since else ''}", title_justify="left")
        cols = [("workflow", "workflow"), ("runs", "runs"), ("status", "status"), ("in tokens", "input_tokens"),
                ("out tokens", "output_tokens"), ("cost $", "cost_usd"), ("p50 ms", "latency_p50_ms"), ("p95 ms", "latency_p95_ms"),
                ("errors", "error_rate")]
    else:
        t = Table(title=f"routing decisions{' since ' + since if since else ''}", title_justify="left")
        cols = [("router", "router"), ("route", "route"), ("decisions", "decisions"), ("share", "share"), ("mean conf.", "mean_confidence"),
                ("low conf.", "low_confidence"), ("outcomes", "outcomes"), ("p50 ms", "latency_p50_ms")]
    for head, _ in cols:
        t.add_column(head, justify="left" if head in ("model", "route", "name", "outcomes", "workflow", "status", "data class", "queue", "router") else "right")
    for r in rows:
        cells = []
        for _, key in cols:
            v = r[key]
            if key in ("error_rate", "fallback_rate", "share"):
                cells.append(f"{v:.1%}")
            elif key in ("outcomes", "status"):
                cells.append(", ".join(f"{k} {n}" for k, n in sorted(v.items())))
            elif key == "cost_usd":
                cells.append(f"{v:.6f}")
            elif key == "budget":
                cells.append("; ".join(f"${b['spent_usd']:.4f} of ${b['limit_usd']:g} {b['period']} ({b['used']:.0%})" for b in v) or "-")
            else:
                cells.append(str(v))
        t.add_row(*(escape(c) for c in cells))
    return t


def report(
    by: str = typer.Option("model", "--by", help="model, route, vote, workflow, audit or queue"),
    since: str | None = typer.Option(None, "--since", help="Only the last 30m / 12h / 1d / 2w."),
    as_json: bool = typer.Option(False, "--json"),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML page with charts to this file.",
                                     dir_okay=False),
    db: str | None = DbOpt,
    catalog: Path | None = CatalogOpt,
) -> None:
    """Requests, tokens, cost, latency, error and fallback rates by model (with spend against the
    catalog's model budgets); decisions by route; voting; workflows; the compliance audit."""
    from ..reports.tables import budget_columns, by_audit, by_model, by_queue, by_route, by_vote, by_workflow, parse_since
    from ..store import open_store

    with friendly_errors():
        if by not in ("model", "route", "vote", "workflow", "audit", "queue"):
            raise ConfigError(f"--by must be model, route, vote, workflow, audit or queue, not {by!r}")
        cat = load_catalog(catalog) if by == "model" else None
        t0 = parse_since(since)
        with open_store(db, strict=True, existing=True) as store:
            if by == "model":
                rows = by_model(store.calls(since=t0))
                if cat is not None and cat.spend is not None:
                    rows = budget_columns(rows, cat.spend, store)
            elif by == "audit":
                rows = by_audit(store.audit(since=t0))
            elif by == "route":
                rows = by_route(store.decisions(since=t0))
            elif by == "vote":
                rows = by_vote(store.verdicts(since=t0))
            elif by == "queue":
                rows = by_queue([i for i in store.queue_items(limit=10**9) if t0 is None or i["created_at"] >= t0],
                                store.decisions(since=t0), store.fits())
            else:
                rows = by_workflow(store.runs(limit=None, since=t0))
            if html is not None:
                from ..reports.html import render_html

                page = render_html(store, since=t0)
                try:
                    html.write_text(page)
                except OSError as e:
                    raise ConfigError(f"{html}: cannot write the HTML report: {e.strerror}") from None
                err_console.print(f"wrote {html} ({len(page) // 1024} KiB)")
        if as_json:
            print(json.dumps(rows))
            return
        t = render_table(by, rows, since)
        Console(width=None if sys.stdout.isatty() else 200).print(t if rows else "[dim]no rows in the trace store yet[/]")
