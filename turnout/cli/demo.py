"""``turnout demo``: routing, sectioning and voting on the embedded models, then the report."""

from __future__ import annotations

import asyncio
import sys

import typer
from rich.console import Console

from ._common import DbOpt, friendly_errors


def demo(
    db: str | None = DbOpt,
    samples: int = typer.Option(5, "--samples", help="Votes per word problem at most."),
) -> None:
    """Route support messages, summarise a document in parallel sections, vote with early stopping —
    on the embedded local models (no key, no network) — then print the report of what was traced."""
    from ..demo import run_demo
    from ..reports.tables import by_model, by_route, by_vote
    from ..store import open_store
    from .report import render_table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    with friendly_errors(), open_store(db) as store:
        since = __import__("time").time()
        asyncio.run(run_demo(console, store, samples=samples))
        console.rule("[bold]Report[/] (turnout report --by model|route|vote reads the same store)")
        console.print(render_table("model", by_model(store.calls(since=since))))
        console.print(render_table("route", by_route(store.decisions(since=since))))
        console.print(render_table("vote", by_vote(store.verdicts(since=since))))
        console.print(f"[dim]traces in {store.path}; `turnout report --html report.html` draws them[/]")
