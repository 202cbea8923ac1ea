"""``turnout report``: what the trace store holds, by model or by route."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._errors import ConfigError
from ._common import friendly_errors


def report(
    by: str = typer.Option("model", "--by", help="model, route or vote"),
    since: str | None = typer.Option(None, "--since", help="Only the last 30m / 12h / 1d / 2w."),
    as_json: bool = typer.Option(False, "--json"),
    db: Path | None = typer.Option(None, "--db", help="Trace database (default: $TURNOUT_DB or ./.turnout/turnout.db).", dir_okay=False),
) -> None:
    """Requests, tokens, cost, latency, error and fallback rates by model; decisions by route."""
    from ..store import SQLiteStore
    from ..store.report import by_model, by_route, by_vote, parse_since

    with friendly_errors():
        if by not in ("model", "route", "vote"):
            raise ConfigError(f"--by must be model, route or vote, not {by!r}")
        t0 = parse_since(since)
        with SQLiteStore(db) as store:
            if by == "model":
                rows = by_model(store.calls(since=t0))
            elif by == "route":
                rows = by_route(store.decisions(since=t0))
            else:
                rows = by_vote(store.verdicts(since=t0))
        if as_json:
            print(json.dumps(rows))
            return
        if by == "model":
            t = Table(title=f"model calls{' since ' + since if since else ''}", title_justify="left")
            cols = [("model", "model"), ("calls", "calls"), ("in tokens", "input_tokens"), ("out tokens", "output_tokens"),
                    ("cost $", "cost_usd"), ("p50 ms", "latency_p50_ms"), ("p95 ms", "latency_p95_ms"),
                    ("errors", "error_rate"), ("retries", "retries"), ("fallbacks", "fallback_rate")]
        elif by == "vote":
            t = Table(title=f"voting{' since ' + since if since else ''}", title_justify="left")
            cols = [("name", "name"), ("verdicts", "verdicts"), ("mean agreement", "mean_agreement"), ("low agreement", "low_agreement"),
                    ("samples used", "samples_used"), ("planned", "samples_planned"), ("saved", "samples_saved"), ("outcomes", "outcomes")]
        else:
            t = Table(title=f"routing decisions{' since ' + since if since else ''}", title_justify="left")
            cols = [("route", "route"), ("decisions", "decisions"), ("share", "share"), ("mean conf.", "mean_confidence"),
                    ("low conf.", "low_confidence"), ("outcomes", "outcomes"), ("p50 ms", "latency_p50_ms")]
        for head, _ in cols:
            t.add_column(head, justify="left" if head in ("model", "route", "name", "outcomes") else "right")
        for r in rows:
            cells = []
            for _, key in cols:
                v = r[key]
                if key in ("error_rate", "fallback_rate", "share"):
                    cells.append(f"{v:.1%}")
                elif key == "outcomes":
                    cells.append(", ".join(f"{k} {n}" for k, n in sorted(v.items())))
                elif key == "cost_usd":
                    cells.append(f"{v:.6f}")
                else:
                    cells.append(str(v))
            t.add_row(*(escape(c) for c in cells))
        Console(width=None if sys.stdout.isatty() else 200).print(t if rows else "[dim]no rows in the trace store yet[/]")
