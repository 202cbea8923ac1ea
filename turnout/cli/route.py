"""``turnout route``: one decision, evaluation on labelled data, and fitting.

    turnout route ROUTER.yaml "text"                 one decision
    turnout route eval ROUTER.yaml DATA.jsonl        accuracy, F1, confusion matrix, latency, cost
    turnout route fit ROUTER.yaml TRAIN.jsonl -o FITTED.yaml
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from .._errors import ConfigError
from ._common import CatalogOpt, DbOpt, friendly_errors, load_catalog


class _DefaultToDecide(TyperGroup):
    """``turnout route ROUTER.yaml "text"`` means ``turnout route decide ROUTER.yaml "text"``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["decide", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_DefaultToDecide, no_args_is_help=True, help="Route inputs, evaluate routers on labelled data, fit them.")
RouterArg = typer.Argument(..., help="Router spec (YAML).", exists=False, dir_okay=False)
KindOpt = typer.Option(None, "--router", help="Use only this router kind of the spec: rule, semantic, llm or cascade.")


def _router(spec_path: Path, kind: str | None, catalog: Path | None) -> Any:
    from ..routing.config import build_router, load_spec

    spec = load_spec(spec_path)
    if kind:
        if kind not in ("rule", "semantic", "llm", "cascade"):
            raise ConfigError(f"--router must be rule, semantic, llm or cascade, not {kind!r}")
        spec = spec.model_copy(update={"router": kind})
    return spec, build_router(spec, catalog=load_catalog(catalog))  # the embedded models when no --catalog


def _router_name(spec_path: Path) -> str:
    from ..routing.config import load_spec

    return load_spec(spec_path).name


def _parse_fields(fields: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if "=" not in f:
            raise ConfigError(f"--field takes KEY=VALUE, got {f!r}")
        k, v = f.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


@app.command("decide")
def decide(
    router: Path = RouterArg,
    text: str = typer.Argument(..., help="The input text."),
    field: list[str] = typer.Option([], "--field", "-f", help="A structured field KEY=VALUE (repeatable)."),
    kind: str | None = KindOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
    db: str | None = typer.Option(None, "--db", help="Also log the decision, in a run, to this trace database. A SQLite file or a postgresql:// URL."),
    catalog: Path | None = CatalogOpt,
) -> None:
    """Route one input and print the decision (with --db, log it and print the run id)."""
    with friendly_errors():
        _, r = _router(router, kind, catalog)
        fields = _parse_fields(field)
        x: Any = {"text": text, **fields} if fields else text
        from ..routing.evaluate import warm_up

        async def one() -> Any:
            await warm_up(r)  # load models first, so the latency shown is the decision's own
            return await r.decide(x)

        d = asyncio.run(one())
        run_id = None
        if db is not None:
            from ..store import open_store

            spec_name = _router_name(router)
            with open_store(db) as store, store.run(f"route:{spec_name}", text) as run_id:
                store.record_decision(d, router=spec_name, input=text)
        if as_json:
            print(json.dumps({**d._asdict(), **({"run_id": run_id} if run_id else {})}))
            return
        c = Console()
        c.print(f"[bold]{escape(str(d.route))}[/]  confidence {d.confidence:.2f}  ({d.outcome}, {escape(d.kind)}"
                f"{', stage ' + escape(d.stage) if d.stage else ''}, {d.latency_s * 1000:.2f} ms)")
        c.print(f"[dim]{escape(d.reason)}[/]")
        if run_id:
            c.print(f"[dim]logged as run {run_id}[/]")
        if d.scores:
            c.print("[dim]scores: " + escape(", ".join(f"{k} {v:.3f}" for k, v in sorted(d.scores.items(), key=lambda kv: -kv[1]))) + "[/]")


def _print_report(rep: Any, console: Console) -> None:
    t = Table(title="routing evaluation", title_justify="left", show_header=False)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in [("rows", rep.n), ("accuracy", f"{rep.accuracy:.3f}"), ("macro-F1", f"{rep.macro_f1:.3f}"),
                 ("abstain rate", f"{rep.abstain_rate:.3f}"), ("accuracy on answered", f"{rep.answered_accuracy:.3f}"),
                 (("latency p50 / p99", f"{rep.latency_p50_ms:.3f} / {rep.latency_p99_ms:.3f} ms") if rep.latency_basis == "per decision"
                  else ("latency (batch mean per row)", f"{rep.latency_p50_ms:.3f} ms")),
                 ("calibration error (answered)", f"{rep.calibration_error:.3f}"),
                 ("LLM cost", f"${rep.cost_usd:.6f}"),
                 ("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(rep.outcomes.items()))),
                 ("decided by", ", ".join(f"{k} {v}" for k, v in sorted(rep.stages.items())) or "-")]:
        t.add_row(k, escape(str(v)))
    console.print(t)
    pr = Table(title="per route", title_justify="left")
    for col in ("route", "precision", "recall", "F1", "support"):
        pr.add_column(col, justify="left" if col == "route" else "right")
    for r, m in rep.per_route.items():
        pr.add_row(escape(r), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(pr)
    if len(rep.labels) > 12:  # 30+ routes: a matrix no terminal shows; the confusions that matter instead
        tc = Table(title="top confusions", title_justify="left")
        for col in ("true label", "routed to", "count"):
            tc.add_column(col, justify="right" if col == "count" else "left")
        for x in rep.top_confusions:
            tc.add_row(escape(x["label"]), escape(x["routed"]), str(x["count"]))
        console.print(tc)
        return
    cm = Table(title="confusion matrix (rows: true label, columns: routed to)", title_justify="left")
    cm.add_column("")
    for lab in rep.labels:
        cm.add_column(escape(lab), justify="right")
    for lab, row in zip(rep.labels, rep.confusion, strict=True):
        if any(row):
            cm.add_row(escape(lab), *[(f"[bold]{v}[/]" if lab == rep.labels[j] else (str(v) if v else "·")) for j, v in enumerate(row)])
    console.print(cm)


@app.command("eval")
def eval_(
    router: Path = RouterArg,
    data: Path = typer.Argument(..., help='Labelled JSONL: {"text": ..., "label": ..., <fields>}.', dir_okay=False),
    kind: str | None = KindOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Draw the confusion matrix, threshold sweep and reliability diagram to this PNG."),
    batch: bool = typer.Option(False, "--batch", help="Route all rows in one batch (faster; latency becomes the batch mean, not percentiles)."),
    one_by_one: bool = typer.Option(False, "--one-by-one", hidden=True, help="The default: each row decided on its own."),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="Decisions in flight (default: the LLM stage's model slots, else 1)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N rows."),
    catalog: Path | None = CatalogOpt,
) -> None:
    """Evaluate a router on labelled data."""
    from ..routing.evaluate import evaluate, load_jsonl

    with friendly_errors():
        spec, r = _router(router, kind, catalog)
        rows = load_jsonl(data, routes=list(spec.routes))[:limit]
        rep = asyncio.run(evaluate(r, rows, batch=batch and not one_by_one, concurrency=concurrency))
        if plot is not None:
            from ..routing.plot import plot_report

            plot_report(rep, plot, title=f"{spec.name} ({r.kind}) on {data.name}")
        if as_json:
            print(json.dumps(rep.as_dict()))
            return
        _print_report(rep, Console())
        if plot is not None:
            Console(stderr=True).print(f"[dim]plot written to {escape(str(plot))}[/]")


@app.command("fit")
def fit(
    router: Path = RouterArg,
    train: Path | None = typer.Argument(None, help="Labelled JSONL to fit on (or --from-queue).", dir_okay=False),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the fitted router spec.", dir_okay=False),
    objective: str = typer.Option("accuracy", "--objective", help="accuracy, or precision (with --target-precision)."),
    target_precision: float = typer.Option(0.9, "--target-precision", min=0.0, max=1.0),
    from_queue: bool = typer.Option(False, "--from-queue", help="Learn from the escalation queue's resolved routing items."),
    queue: str | None = typer.Option(None, "--queue", help="With --from-queue: only this queue."),
    kind: str | None = typer.Option(None, "--router", help="Fit the spec as this router kind (cascade: the confidence cut goes to its semantic stage), and write it so."),
    db: str | None = DbOpt,
    catalog: Path | None = CatalogOpt,
) -> None:
    """Fit the semantic stage's scoring, thresholds and temperature (or, --from-queue, add the
    queue's labelled items as examples and refit thresholds on a held-out share); write the spec."""
    from ..routing.config import default_stages, save_fitted, semantic_of
    from ..routing.evaluate import load_jsonl

    with friendly_errors():
        if objective not in ("accuracy", "precision"):
            raise ConfigError(f"--objective must be accuracy or precision, not {objective!r}")
        if (train is None) == (not from_queue):
            raise ConfigError("give a TRAIN file or --from-queue (one of them)")
        spec, r = _router(router, kind, catalog)
        sem = semantic_of(r)
        if sem is None:
            raise ConfigError(f"{router}: fit needs a semantic router or a cascade with a semantic stage")
        c = Console()
        if from_queue:
            _fit_from_queue(r, sem, spec, out, queue, db, c)
            return
        assert train is not None
        rows = load_jsonl(train, routes=list(spec.routes))
        rep = asyncio.run(sem.fit([(x.input, x.label) for x in rows], objective=objective, target_precision=target_precision))  # type: ignore[arg-type]
        short = rep.shortlist if spec.router == "cascade" and any(st.shortlist for st in default_stages(spec)) else None
        save_fitted(spec, sem, out, shortlist=short["k"] if short else None)
        c.print(f"fitted on {len(rows)} rows ({rep.objective}), {escape(rep.validation)}")
        b, a = rep.before, rep.after
        c.print(f"scoring [bold]{escape(rep.scoring)}[/], temperature {rep.temperature}: held-out accuracy "
                f"{b['cv_accuracy']:.3f} -> [bold]{a['cv_accuracy']:.3f}[/] (on the training rows {b['train_accuracy']:.3f} -> "
                f"{a['train_accuracy']:.3f}, which each example matches itself)")
        for x in rep.candidates:
            c.print(f"[dim]  {'*' if x['chosen'] else ' '} {escape(x['candidate']):<28} held out {x['cv_accuracy']:.3f}   "
                    f"training rows {x['train_accuracy']:.3f}[/]")
        if rep.confidence_cut is not None:
            c.print(f"answers at confidence >= {rep.confidence_cut:.3f}: held out, precision {rep.expected_precision or 0:.3f} "
                    f"(target {target_precision:.3f}) with {rep.expected_abstain_rate:.1%} of rows abstained")
        if short:
            c.print(f"the shortlisting stage is shown the best {short['k']} routes: held out, they hold the right one for "
                    f"{short['coverage']:.3f} of {short['rows']} rows ({escape(short['scope'])}; target {target_precision:.3f})")
        c.print(f"whole decision, held out: accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}, "
                f"abstain rate {b['abstain_rate']:.3f} -> {a['abstain_rate']:.3f}")
        if any(n.startswith("per-route score thresholds") for n in rep.notes):
            c.print("thresholds: " + escape(", ".join(f"{k} {v:.3f}" for k, v in rep.thresholds.items())))
        c.print(f"written to {escape(str(out))}")


def _fit_from_queue(r: Any, sem: Any, spec: Any, out: Path, queue: str | None, db: str | None, c: Console) -> None:
    from ..routing.config import save_fitted
    from ..routing.learn import fit_from_queue
    from ..store import open_store

    with open_store(db, strict=True, existing=True) as store:
        rep = asyncio.run(fit_from_queue(r, store, queue=queue))
    save_fitted(spec, sem, out)
    c.print(f"learnt {rep.examples} labelled items from the queue: " + escape(", ".join(f"{k} +{n}" for k, n in sorted(rep.added.items()))))
    old, new = rep.escalate_below
    if rep.out_of_fold:
        o = rep.out_of_fold
        c.print(f"escalate_below {old:.3f} -> {new:.3f}: out of fold, {o['now_answered']} of {o['items']} items would now be answered, "
                f"{o['accuracy_now_answered']:.1%} of them right")
    else:
        c.print("[dim]escalate_below kept (too few items to cross-fit, or no escalation cut)[/]")
    c.print(f"written to {escape(str(out))}")


@app.command("misroutes")
def misroutes(
    db: str | None = typer.Option(None, "--db", help="Trace database (default: $TURNOUT_DB or ./.turnout/turnout.db). A SQLite file or a postgresql:// URL."),
    router_name: str | None = typer.Option(None, "--router-name", help="Only decisions of this router (its spec's name)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the misroutes as labelled JSONL (for `turnout route fit`).", dir_okay=False),
    all_labelled: bool = typer.Option(False, "--all", help="Export every decision with a route label, not only the misroutes."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Decisions whose feedback names another route: a confusion table, and a JSONL to fit on."""
    from ..store import open_store

    with friendly_errors():
        with open_store(db, strict=True, existing=True) as store:
            wrong = store.misroutes(router=router_name)
            rows = store.labelled_decisions(router=router_name) if all_labelled else wrong
        pairs: dict[tuple[str, str], int] = {}
        for d, want in wrong:
            pairs[(str(d.route), want)] = pairs.get((str(d.route), want), 0) + 1
        if out is not None:
            usable = [(d, want) for d, want in rows if d.input and not d.input.startswith("sha256:")]
            out.write_text("".join(json.dumps({"text": d.input, "label": want}) + "\n" for d, want in usable))
        if as_json:
            print(json.dumps({"misroutes": len(wrong), "pairs": [{"routed": a, "correct": b, "count": n} for (a, b), n in pairs.items()]}))
            return
        c = Console()
        t = Table(title=f"misroutes: {len(wrong)}", title_justify="left")
        for col in ("routed to", "should be", "count"):
            t.add_column(col)
        for (a, b), n in sorted(pairs.items(), key=lambda kv: -kv[1]):
            t.add_row(escape(a), escape(b), str(n))
        c.print(t)
        if out is not None:
            c.print(f"wrote {len(rows)} labelled rows to {escape(str(out))} (redacted inputs are skipped)")
