"""The ``turnout`` command line (typer + rich). One module per command group."""

from __future__ import annotations

import sys

import typer

from . import chat as _chat
from . import demo as _demo
from . import experiment as _experiment
from . import feedback as _feedback
from . import logs as _logs
from . import models as _models
from . import queue as _queue
from . import report as _report
from . import route as _route
from . import serve as _serve
from . import vote as _vote
from . import workflow as _workflow

app = typer.Typer(
    name="turnout",
    help="Route and parallelize LLM workflows. Runs on an embedded local model with no key and no network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _flags_without_type() -> None:
    """typer shows ``<bool>`` beside every on/off flag (``--json <bool>``), which reads as if the flag
    took a value; a flag shows no type (the one presentation change, made here once)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag and not self.metavar else shown(self, ctx)  # type: ignore[arg-type]

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"turnout {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_version, help="Print the version and exit."),
) -> None:
    """Route and parallelize LLM workflows. Runs on an embedded local model with no key and no network."""


app.command("demo")(_demo.demo)
app.command("chat")(_chat.chat)
app.add_typer(_models.app, name="models")
app.command("feedback")(_feedback.feedback)
app.command("report")(_report.report)
app.command("logs")(_logs.logs)
app.command("validate")(_workflow.validate)
app.command("run")(_workflow.run)
app.command("batch")(_workflow.batch)
app.add_typer(_route.app, name="route")
app.add_typer(_experiment.app, name="experiment")
app.command("serve")(_serve.serve)
app.add_typer(_serve.keys_app, name="keys")
app.add_typer(_vote.app, name="vote")
app.add_typer(_queue.app, name="queue")


def _tracing() -> None:
    """Spans exported by OTLP when the standard OTEL_* variables ask for it (turnout.store.otel.setup)."""
    import os

    if not any(os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")):
        return
    from .._errors import ConfigError
    from ..store.otel import setup

    try:
        setup()
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)


def main() -> None:
    """The ``turnout`` command. An error that escapes every command's own handling is still printed
    scrubbed of secrets (``turnout._secrets``), traceback included, with exit code 1."""
    from .._secrets import scrub_logs

    scrub_logs()
    _tracing()
    try:
        app()
    except Exception as e:  # noqa: BLE001 - the last edge: never print a secret
        import traceback

        from .._secrets import scrub

        sys.stderr.write(scrub("".join(traceback.format_exception(e))))
        sys.stderr.write(f"turnout: internal error ({type(e).__name__}); please report it with the traceback above\n")
        sys.exit(1)


__all__ = ["app", "main"]
