"""``turnout experiment report NAME``: variants side by side, with intervals and a verdict."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._errors import ConfigError
from ._common import friendly_errors

app = typer.Typer(no_args_is_help=True, help="A/B experiments recorded in the trace store.")


@app.command("report")
def report(
    name: str = typer.Argument(..., help="The experiment's name."),
    as_json: bool = typer.Option(False, "--json"),
    db: str | None = typer.Option(None, "--db", help="Trace database (default: $TURNOUT_DB or ./.turnout/turnout.db). A SQLite file or a postgresql:// URL."),
) -> None:
    """Per-variant cost, latency, error rate, score and accuracy with 95% intervals, and a verdict."""
    from ..store import open_store
    from ..store.experiments import experiment_report

    with friendly_errors():
        with open_store(db, strict=True, existing=True) as store:
            rows = store.outcomes(name)
        if not rows:
            raise ConfigError(f"no outcomes recorded for experiment {name!r}")
        rep = experiment_report(rows)
        if as_json:
            print(json.dumps(rep))
            return
        t = Table(title=f"experiment {name}", title_justify="left")
        for col in ("variant", "n", "accuracy (95% CI)", "errors", "mean cost $", "p50 / p95 latency s", "mean score"):
            t.add_column(col, justify="left" if col == "variant" else "right")
        for v, m in rep["variants"].items():
            acc = f"{m['accuracy']:.3f} ({m['accuracy_ci'][0]:.3f}–{m['accuracy_ci'][1]:.3f})" if m["accuracy"] is not None else "-"
            score = f"{m['score_mean'][0]:.3f}" if m["score_mean"] else "-"
            t.add_row(escape(v), str(m["n"]), acc, f"{m['error_rate']:.1%}", f"{m['cost_usd_mean'][0]:.6f}",
                      f"{m['latency_p50_s']:.3f} / {m['latency_p95_s']:.3f}", score)
        c = Console(width=None if sys.stdout.isatty() else 200)
        c.print(t)
        c.print(f"[bold]verdict:[/] {escape(rep['verdict'])}")
