"""The ``turnout`` command line (typer + rich). One module per command group."""

from __future__ import annotations

import sys

import typer

from . import chat as _chat
from . import demo as _demo
from . import experiment as _experiment
from . import feedback as _feedback
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
app.command("demo")(_demo.demo)
app.command("chat")(_chat.chat)
app.add_typer(_models.app, name="models")
app.command("feedback")(_feedback.feedback)
app.command("report")(_report.report)
app.command("validate")(_workflow.validate)
app.command("run")(_workflow.run)
app.command("batch")(_workflow.batch)
app.add_typer(_route.app, name="route")
app.add_typer(_experiment.app, name="experiment")
app.command("serve")(_serve.serve)
app.add_typer(_serve.keys_app, name="keys")
app.add_typer(_vote.app, name="vote")
app.add_typer(_queue.app, name="queue")


def main() -> None:
    """The ``turnout`` command. An error that escapes every command's own handling is still printed
    scrubbed of secrets (``turnout._secrets``), traceback included, with exit code 1."""
    from .._secrets import scrub_logs

    scrub_logs()
    try:
        app()
    except Exception as e:  # noqa: BLE001 - the last edge: never print a secret
        import traceback

        from .._secrets import scrub

        sys.stderr.write(scrub("".join(traceback.format_exception(e))))
        sys.stderr.write(f"turnout: internal error ({type(e).__name__}); please report it with the traceback above\n")
        sys.exit(1)


__all__ = ["app", "main"]
