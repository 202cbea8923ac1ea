"""``turnout feedback RUN_ID``: a score, labels and a comment on a traced run."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from .._errors import ConfigError
from ._common import DbOpt, friendly_errors


def feedback(
    run_id: str = typer.Argument(..., help="The run to give feedback on (printed by `turnout route ... --db`)."),
    score: float | None = typer.Option(None, "--score", help="A score, e.g. 1 good / 0 bad."),
    label: list[str] = typer.Option([], "--label", "-l", help="KEY=VALUE, e.g. route=billing for the correct route (repeatable)."),
    comment: str | None = typer.Option(None, "--comment"),
    db: str | None = DbOpt,
) -> None:
    """Record feedback on a run; `route=...` labels feed `turnout route misroutes`."""
    from ..store import open_store

    with friendly_errors():
        labels = {}
        for item in label:
            if "=" not in item:
                raise ConfigError(f"--label takes KEY=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            labels[k.strip()] = v.strip()
        if score is None and not labels and not comment:
            raise ConfigError("give at least one of --score, --label, --comment")
        with open_store(db, strict=True, existing=True) as store:
            store.add_feedback(run_id, score=score, labels=labels, comment=comment)
        Console().print(f"feedback recorded for run {escape(run_id)}")
