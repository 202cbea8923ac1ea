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
from .._secrets import describe
from ..policies.catalog import Catalog

err_console = Console(stderr=True, highlight=False)

CatalogOpt = typer.Option(
    None, "--catalog", "-c", help="YAML catalog of models (default: $TURNOUT_CATALOG, else the built-in catalog).",
    dir_okay=False,
)


DbOpt = typer.Option(
    None, "--db", help="Trace store: a SQLite file or a postgresql:// URL (default: $TURNOUT_DB, else ./.turnout/turnout.db).",
)


RedactOpt = typer.Option(
    False, "--redact", envvar="TURNOUT_REDACT", help="Store sha256 digests instead of input and output texts.",
)


def load_catalog(path: Path | None, *, providers: bool = True) -> Catalog:
    """Argument beats environment beats the built-in catalog. ``providers``: ``openai/NAME``,
    ``anthropic/NAME`` and ``ollama/NAME`` work without an entry (off for the gateway, which serves
    only the models its operator described, priced, for its keys' budgets)."""
    p = path or (Path(os.environ["TURNOUT_CATALOG"]) if os.environ.get("TURNOUT_CATALOG") else None)
    return Catalog.load(p, providers=providers) if p else Catalog(providers=providers)


def _first_turnout_error(group: BaseExceptionGroup) -> TurnoutError | None:
    """The first turnout error inside a task group's exception group (config errors first)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop(0)
        if isinstance(e, BaseExceptionGroup) and not isinstance(e, TurnoutError):
            stack.extend(e.exceptions)
        else:
            leaves.append(e)
    found = [e for e in leaves if isinstance(e, TurnoutError)]
    return next((e for e in found if isinstance(e, ConfigError)), found[0] if found else None)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn turnout errors into one clear line on stderr and an exit code (2 = your input, 1 = a failure).
    Errors raised inside a task group arrive grouped; the group is unwrapped to its turnout error."""
    try:
        yield
    except BaseExceptionGroup as g:
        e = _first_turnout_error(g)
        if e is None:
            raise
        _report(e)
    except TurnoutError as e:
        _report(e)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def _report(e: TurnoutError) -> None:
    if isinstance(e, ConfigError):
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)
        raise typer.Exit(2) from None
    err_console.print(f"[bold red]error:[/] {escape(describe(e))}", markup=True, soft_wrap=True)
    raise typer.Exit(1) from None


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
