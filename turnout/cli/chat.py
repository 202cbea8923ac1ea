"""``turnout chat``: one prompt to one model, streamed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from .._constants import DEFAULT_MODEL
from .._errors import ConfigError
from .._types import Request, ResponseFormat
from ..policies.trace import MemorySink
from ._common import CatalogOpt, err_console, friendly_errors, load_catalog, read_prompt


def chat(
    prompt: str = typer.Argument(..., help="The prompt; '-' reads stdin, '@FILE' reads a file."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Catalog name of the model (see `turnout models`)."),
    system: str | None = typer.Option(None, "--system", "-s", help="System prompt."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text, usage, cost, latency) instead of streaming."),
    schema: Path | None = typer.Option(None, "--schema", help="JSON-schema file: the answer is constrained to it.", dir_okay=False),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Most tokens to generate."),
    temperature: float | None = typer.Option(None, "--temperature", "-t", min=0.0, max=2.0),
    seed: int | None = typer.Option(None, "--seed"),
    db: str | None = typer.Option(None, "--db", help="Trace the call (in a run) to this database, for `turnout report`. A SQLite file or a postgresql:// URL."),
    catalog: Path | None = CatalogOpt,
) -> None:
    """Ask one model one question; the answer streams as it is generated."""
    with friendly_errors():
        text = read_prompt(prompt)
        rf = None
        if schema is not None:
            try:
                rf = ResponseFormat.json_schema(json.loads(schema.read_text()))
            except OSError as e:
                raise ConfigError(f"{schema}: cannot read the schema: {e.strerror}") from None
            except ValueError as e:
                raise ConfigError(f"{schema}: not valid JSON: {e}") from None
        req = Request.of(text, system=system, max_tokens=max_tokens, temperature=temperature, seed=seed, response_format=rf)
        cat = load_catalog(catalog)
        if db is None:
            asyncio.run(_run(cat, model, req, as_json))
            return
        from ..store import open_store

        with open_store(db) as store, store.run(f"chat:{model}", text):
            asyncio.run(_run(cat, model, req, as_json))


async def _run(cat: Any, name: str, req: Request, as_json: bool) -> None:
    sink = MemorySink()
    m = cat.model(name, sink=sink)  # with --db, inside the store's run: the run records the call
    try:
        if as_json:
            c = await m.complete(req)
            print(json.dumps({
                "model": c.model, "text": c.text, "finish_reason": c.finish_reason,
                "usage": {"input_tokens": c.usage.input_tokens, "output_tokens": c.usage.output_tokens},
                "cost_usd": c.cost_usd, "latency_s": round(c.latency_s, 4),
            }))
            return
        last = None
        async for chunk in m.stream(req):
            if chunk.delta:
                sys.stdout.write(chunk.delta)
                sys.stdout.flush()
            last = chunk
        sys.stdout.write("\n")
        if last is not None and last.usage is not None:
            ev = sink.events[-1] if sink.events else None
            extra = f", fallback {ev.fallback}" if ev is not None and ev.fallback else ""
            err_console.print(
                f"[dim]{escape(last.model or name)} · {last.usage.input_tokens} in / {last.usage.output_tokens} out tokens · "
                f"${last.cost_usd:.6f} · {last.latency_s:.2f}s{escape(extra)}[/]"
            )
    finally:
        await cat.aclose()
