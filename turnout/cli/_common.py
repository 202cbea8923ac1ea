"""Shared CLI plumbing: the catalog option, error printing, the console."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from .._errors import ConfigError, TurnoutError
from ..models.catalog import Catalog

err_console = Console(stderr=True, highlight=False)

CatalogOpt = typer.Option(
    None, "--catalog", "-c", help="YAML catalog of models (default: $TURNOUT_CATALOG, else the built-in catalog).",
    dir_okay=False,
)


DbOpt = typer.Option(
    None, "--db", help="Trace store: a SQLite file or a postgresql:// URL (default: $TURNOUT_DB, else ./.turnout/turnout.db).",
)


def load_catalog(path: Path | None) -> Catalog:
    """Argument beats environment beats the built-in catalog."""
    p = path or (Path(os.environ["TURNOUT_CATALOG"]) if os.environ.get("TURNOUT_CATALOG") else None)
    return Catalog.load(p) if p else Catalog()


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn turnout errors into one clear line on stderr and an exit code (2 = your input, 1 = a failure)."""
    try:
        yield
    except ConfigError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)
        raise typer.Exit(2) from None
    except TurnoutError as e:
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {escape(str(e))}", markup=True, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def read_prompt(prompt: str) -> str:
    if prompt == "-":
        return sys.stdin.read()
    if prompt.startswith("@"):
        p = Path(prompt[1:])
        try:
            return p.read_text()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read the prompt file: {e.strerror}") from None
    return prompt
