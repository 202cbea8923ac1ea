"""``turnout vote prior``: fit the predictive stopping rule's prior to the votes logged in the store."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._common import friendly_errors

app = typer.Typer(no_args_is_help=True, help="Voting: what the logged votes say about early stopping.")


def stop_points(prior: object, samples: int, level: float) -> dict[str, int | None]:
    """After how many unanimous votes (and with one dissent) the predictive rule stops, with this prior."""
    from ..parallel import Vote, is_decided

    def first_stop(dissent: int) -> int | None:
        for k in range(2, samples + 1):
            votes = [Vote("b", "b", "", 1.0, 0)] * dissent + [Vote("a", "a", "", 1.0, i) for i in range(k - dissent)]
            if k - dissent > dissent and is_decided(votes, samples, mode="predictive", level=level, prior=prior):  # type: ignore[arg-type]
                return k
        return None

    return {"unanimous": first_stop(0), "one_dissent": first_stop(1)}


@app.command("prior")
def prior(
    name: str | None = typer.Option(None, "--name", help="Only the verdicts of this vote step (its name in the workflow)."),
    since: str | None = typer.Option(None, "--since", help="Only the last 30m / 12h / 1d / 2w."),
    samples: int = typer.Option(8, "--samples", help="N of the vote the prior is for (to show where it stops)."),
    level: float = typer.Option(0.95, "--level", help="The vote's confidence level."),
    as_json: bool = typer.Option(False, "--json"),
    db: str | None = typer.Option(None, "--db", help="Trace database (default: $TURNOUT_DB or ./.turnout/turnout.db). A SQLite file or a postgresql:// URL."),
) -> None:
    """Fit the prior of early_stop: predictive (how often the model agrees with itself) to the logged votes.

    The uniform prior needs 3 agreeing votes of 8 before it stops; a model that the log shows agrees
    with itself on this task earns an earlier stop. Paste the printed `prior:` into the vote step."""
    from ..parallel import VotePrior
    from ..reports.tables import parse_since
    from ..store import open_store

    with friendly_errors():
        with open_store(db, strict=True, existing=True) as store:
            fitted = VotePrior.from_store(store, name=name, since=parse_since(since))
        uniform = VotePrior()
        doc = {"alpha": fitted.alpha, "beta": fitted.beta, "mean_share": round(fitted.mean, 4), "fitted_on": fitted.fitted_on,
               "samples": samples, "level": level, "stops_fitted": stop_points(fitted, samples, level),
               "stops_uniform": stop_points(uniform, samples, level)}
        if as_json:
            print(json.dumps(doc))
            return
        c = Console(width=None if sys.stdout.isatty() else 200)
        c.print(f"fitted on {fitted.fitted_on} logged votes{' of ' + escape(repr(name)) if name else ''}: "
                f"Beta({fitted.alpha:g}, {fitted.beta:g}), the leading answer gets {fitted.mean:.0%} of the votes on average")
        t = Table(title=f"where early_stop: predictive stops (N={samples}, level {level})", title_justify="left")
        for col in ("prior", "all votes agree", "one dissenting vote"):
            t.add_column(col, justify="left" if col == "prior" else "right")
        for label, key in (("uniform (no prior)", "stops_uniform"), ("fitted", "stops_fitted")):
            st = doc[key]
            t.add_row(label, *(f"after {st[k]}" if st[k] else "never early" for k in ("unanimous", "one_dissent")))  # type: ignore[index]
        c.print(t)
        c.print(f"in the workflow's vote step:  prior: {{alpha: {fitted.alpha:g}, beta: {fitted.beta:g}}}")
