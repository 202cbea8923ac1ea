"""``turnout validate / run / batch``: YAML workflows from the command line.

    turnout validate WF.yaml                          compile it; errors as file:line: field
    turnout run WF.yaml --input TEXT|@FILE [--json]   run once; the output and a summary
    turnout batch WF.yaml IN.jsonl -o OUT.jsonl       every line, resumable after Ctrl-C or kill -9
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._errors import ConfigError
from ._common import CatalogOpt, DbOpt, RedactOpt, err_console, friendly_errors, load_catalog, read_prompt

if TYPE_CHECKING:
    from ..store.base import BatchLedger, Store

WfArg = typer.Argument(..., help="Workflow (YAML).", dir_okay=False)


def _load(path: Path, catalog: Path | None) -> Any:
    from ..workflows import Workflow

    return Workflow.load(path, catalog=load_catalog(catalog) if catalog else None)


def _input_value(text: str) -> Any:
    s = text.strip()
    if s.startswith(("{", "[")):
        try:
            return json.loads(s)
        except ValueError:
            pass
    return text


def validate(workflow: Path = WfArg, catalog: Path | None = CatalogOpt) -> None:
    """Check a workflow (schema, references, templates, cycles) without calling any model."""
    with friendly_errors():
        wf = _load(workflow, catalog)
        kinds: dict[str, int] = {}

        def walk(node: Any) -> None:
            kinds[node.kind] = kinds.get(node.kind, 0) + 1
            for attr in ("steps", "targets", "default", "map", "sample", "escalate", "respond"):
                v = getattr(node, attr, None)
                if isinstance(v, list):
                    for x in v:
                        walk(x)
                elif isinstance(v, dict):
                    for x in v.values():
                        walk(x)
                elif v is not None and hasattr(v, "kind"):
                    walk(v)
        walk(wf.root)
        kinds["chain"] -= 1  # the workflow itself
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()) if n)
        Console(highlight=False).print(f"[green]ok[/] {escape(str(workflow))}: workflow {escape(wf.name)!r} ({escape(what)})")


def _summary_table(res: Any) -> Table:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim")
    t.add_column()
    t.add_row("status", res.status + (f" ({res.error})" if res.error else ""))
    for step, d in res.decisions:
        t.add_row(f"route ({step})", f"{d.route} (confidence {d.confidence:.2f}, {d.outcome})")
    for e in res.escalations:
        if e.get("item"):
            t.add_row("waiting", f"on queue {e['queue']}: item {e['item']} (turnout queue show {e['item']})")
        else:
            t.add_row("escalated", f"to {e['queue']}")
    tools = [s for s in res.steps if s.kind == "tool"]
    if tools:  # each tool call of the run, in order: name and how it went
        t.add_row("tools", ", ".join(f"{s.detail.get('tool', s.name)}" + ("" if s.status == "ok" else f" ({s.status})") for s in tools))
    t.add_row("calls", f"{res.calls}" + (f" ({res.errors} failed)" if res.errors else ""))
    t.add_row("tokens", f"{res.input_tokens} in / {res.output_tokens} out")
    t.add_row("cost", f"${res.cost_usd:.6f}")
    t.add_row("latency", f"{res.latency_s:.2f} s")
    if res.run_id:
        t.add_row("run id", res.run_id)
    return t


def run(
    workflow: Path = WfArg,
    input: str | None = typer.Option(None, "--input", "-i", help="The input: text, @FILE, or - for stdin (default: the workflow's example)."),
    as_json: bool = typer.Option(False, "--json", help="Print the output and the summary as one JSON object."),
    db: str | None = DbOpt,
    redact: bool = RedactOpt,
    catalog: Path | None = CatalogOpt,
) -> None:
    """Run a workflow once: print its output and a summary (route, calls, tokens, cost, latency)."""
    from ..store import open_store

    with friendly_errors():
        wf = _load(workflow, catalog)
        if input is None:
            if not wf.example:
                raise ConfigError(f"{workflow}: give --input (this workflow has no 'example:')")
            input = wf.example
        value = _input_value(read_prompt(input))
        async def go() -> Any:
            try:
                return await wf.run(value, store=store)
            finally:
                await wf.aclose()

        with open_store(db, redact=redact) as store:
            res = asyncio.run(go())
        if as_json:
            print(json.dumps({"output": res.output, **res.summary()}, ensure_ascii=False, default=str))
        else:
            out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
            out.print(escape(res.text))
            err_console.print(_summary_table(res))
        if res.status == "error":
            raise typer.Exit(1)


def batch(
    workflow: Path = WfArg,
    inputs: Path = typer.Argument(..., help="JSON Lines: a JSON string or object per line (\"id\" keys an item).", dir_okay=False),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the results (JSON Lines, input order).", dir_okay=False),
    concurrency: int = typer.Option(4, "--concurrency", "-n", help="Items at a time."),
    strict: bool = typer.Option(False, "--strict", help="Refuse the whole file if any line is invalid."),
    backend: str = typer.Option("local", "--backend", help="local (this process) or ray (a Ray cluster: pip install 'turnout\\[ray]')."),
    address: str | None = typer.Option(None, "--address", help="Ray: the cluster to join (auto, ray://host:10001); default: start a local one."),
    workers: int = typer.Option(2, "--workers", help="Ray: worker actors (each runs --concurrency items at a time)."),
    deadline: float | None = typer.Option(None, "--deadline", help="Seconds each item may run; past it the item is an error and the batch goes on."),
    db: str | None = DbOpt,
    redact: bool = RedactOpt,
    catalog: Path | None = CatalogOpt,
) -> None:
    """Run every line through the workflow with a progress bar. Resumable: after Ctrl-C or kill -9,
    the same command continues where it stopped and never re-runs finished items. With --backend ray
    the items run on Ray actors; limits and budgets hold cluster-wide (see docs/ray.md)."""
    from ..store import open_store
    from ..workflows.batch import batch_id_for, write_output

    with friendly_errors():
        if backend not in ("local", "ray"):
            raise ConfigError(f"--backend must be local or ray, not {backend!r}")
        wf = _load(workflow, catalog)
        items, bad = _batch_inputs(inputs, strict)
        bid = batch_id_for(workflow, inputs)
        with open_store(db, strict=True, redact=redact) as store:
            progress = _progress()
            task = progress.add_task(wf.name, total=len(items), rate=0.0, cost=0.0, errors=0)
            summary_box: dict[str, Any] = {}

            def on_item(s: Any, item: Any, res: Any) -> None:
                summary_box["s"] = s
                progress.update(task, completed=s.done + s.errors, rate=s.ran / max(s.elapsed_s, 1e-9), cost=s.cost_usd, errors=s.errors)

            def run() -> Any:
                return _run_batch(backend, wf, workflow, items, store=store, batch_id=bid, source=str(inputs.resolve()), db=db,
                                  catalog=catalog, concurrency=concurrency, workers=workers, address=address, deadline=deadline,
                                  on_item=on_item)

            interrupted = False
            with progress:
                progress.update(task, completed=_already_done(store, bid, items))
                try:
                    summary = run()
                except KeyboardInterrupt:
                    interrupted = True
                    summary = summary_box.get("s")
            n, (done, errors) = write_output(store, bid, items, output), _ledger_counts(store, bid)
        if interrupted:
            err_console.print(f"[yellow]interrupted:[/] {done} of {len(items)} done (written to {escape(str(output))}); "
                              "run the same command to continue")
            raise typer.Exit(130)
        err_console.print(_batch_table(len(items), done, errors, summary, len(bad), n, output))
        if errors:
            raise typer.Exit(1)


def _run_batch(backend: str, wf: Any, path: Path, items: list[Any], *, store: Store, batch_id: str, source: str, db: str | None,
               catalog: Path | None, concurrency: int, workers: int, address: str | None, deadline: float | None,
               on_item: Any) -> Any:
    """The batch on its backend: Ray workers load the workflow from its file, the local runner uses ``wf``."""
    from ..workflows.batch import run_batch

    if backend == "ray":
        from ..workflows.ray_backend import run_batch_ray

        return run_batch_ray(path, items, store=store, store_target=db or os.environ.get("TURNOUT_DB") or str(store.path),
                             batch_id=batch_id, source=source, catalog_path=catalog or os.environ.get("TURNOUT_CATALOG"),
                             workers=workers, per_worker=concurrency, address=address, on_item=on_item, deadline=deadline)[0]
    return asyncio.run(_closing(wf, run_batch(wf, items, store=store, batch_id=batch_id, source=source, concurrency=concurrency,
                                              on_item=on_item, deadline=deadline)))


def _ledger_counts(store: BatchLedger, bid: str) -> tuple[int, int]:
    states = [r["status"] for r in store.ledger_items(bid)]
    return states.count("done"), states.count("error")


def _already_done(store: BatchLedger, bid: str, items: list[Any]) -> int:
    """How many items an earlier run of this batch finished (said, when it is a resumption)."""
    earlier = {r["item_key"]: r["status"] for r in store.ledger_items(bid)}
    already = sum(1 for it in items if earlier.get(it.key) == "done")
    if already:
        err_console.print(f"resuming batch {bid}: {already} of {len(items)} items already done", soft_wrap=True)
    return already


async def _closing(wf: Any, job: Any) -> Any:
    """Await ``job``, then close the workflow's models (HTTP sessions, local model servers)."""
    try:
        return await job
    finally:
        await wf.aclose()


def _batch_inputs(inputs: Path, strict: bool) -> tuple[list[Any], list[tuple[int, str]]]:
    """The valid items of a JSONL file; each invalid line reported by number (all refused with --strict)."""
    from ..workflows.batch import read_items

    items, bad = read_items(inputs)
    for line, why in bad[:20]:
        err_console.print(f"[yellow]{escape(str(inputs))}:{line}: skipped: {escape(why)}[/]", soft_wrap=True)
    if len(bad) > 20:
        err_console.print(f"[yellow]... and {len(bad) - 20} more invalid lines[/]")
    if bad and strict:
        raise ConfigError(f"{inputs}: {len(bad)} invalid line(s) (first: line {bad[0][0]}); nothing was run (--strict)")
    if not items:
        raise ConfigError(f"{inputs}: no valid input lines")
    return items, bad


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.2f} items/s"), TextColumn("${task.fields[cost]:.6f}"),
        TextColumn("[red]{task.fields[errors]} errors"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    )


def _batch_table(total: int, done: int, errors: int, summary: Any, invalid: int, rows: int, output: Path) -> Table:
    t = Table(title="batch", show_header=False, title_justify="left")
    t.add_column(style="dim")
    t.add_column(justify="right")
    t.add_row("items", str(total))
    t.add_row("done", str(done))
    t.add_row("errors", str(errors))
    t.add_row("from earlier attempts", str(summary.skipped_done if summary else 0))
    t.add_row("invalid lines skipped", str(invalid))
    t.add_row("cost", f"${summary.cost_usd:.6f}" if summary else "-")
    t.add_row("elapsed", f"{summary.elapsed_s:.1f} s" if summary else "-")
    t.add_row("output", f"{rows} rows -> {output}")
    return t
