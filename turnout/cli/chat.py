"""``turnout chat``: a prompt to a model, streamed; with no prompt, a conversation turn by turn.

Every turn is logged to the trace store (a run named ``chat``, its input the user's turn, its output
the answer; ``--no-log`` to skip), so ``turnout logs`` shows it and ``-c`` continues it: the turns
are linked (tag ``previous``) and read back by run id, one indexed lookup per turn.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from .._constants import DEFAULT_MODEL
from .._errors import ConfigError
from .._types import Message, Request, ResponseFormat
from ..policies.trace import MemorySink
from ._common import DbOpt, err_console, friendly_errors, load_catalog, read_prompt

CHAT = "chat"  # the runs' workflow name
_QUIT = ("exit", "quit", ":q")
_MAX_TURNS = 10_000  # a longer chain of ``previous`` links is a loop in a tampered store


def chat(
    prompt: str | None = typer.Argument(None, help="The prompt; '-' reads stdin, '@FILE' reads a file. None: a conversation, "
                                        "one line per turn (Ctrl-D or 'exit' ends it)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                              help="Catalog name of the model (see `turnout models`), or openai/NAME, anthropic/NAME, ollama/NAME."),
    system: str | None = typer.Option(None, "--system", "-s", help="System prompt."),
    cont: bool = typer.Option(False, "--continue", "-c", help="Continue the last conversation in the store."),
    conversation: str | None = typer.Option(None, "--cid", help="Continue this conversation (its id, from `turnout logs`)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Any OpenAI-compatible endpoint: -m is the model's name there "
                                        "(key from $OPENAI_API_KEY; none needed on loopback)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per answer (text, usage, cost, latency) instead of streaming."),
    schema: Path | None = typer.Option(None, "--schema", help="JSON-schema file: the answer is constrained to it.", dir_okay=False),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Most tokens to generate."),
    temperature: float | None = typer.Option(None, "--temperature", "-t", min=0.0, max=2.0),
    seed: int | None = typer.Option(None, "--seed"),
    no_log: bool = typer.Option(False, "--no-log", help="Do not log the conversation to the trace store."),
    db: str | None = DbOpt,
    catalog: Path | None = typer.Option(None, "--catalog", help="YAML catalog of models (default: $TURNOUT_CATALOG, else the built-in one).",
                                        dir_okay=False),
) -> None:
    """Ask a model; the answer streams as it is generated. Without a prompt, chat turn by turn; -c goes on
    with the last conversation. Every turn is logged (see `turnout logs`)."""
    from ..store import open_store

    with friendly_errors():
        if no_log and (cont or conversation):
            raise ConfigError("--continue/--cid read the conversation from the store: drop --no-log")
        text = read_prompt(prompt) if prompt is not None else None
        opts = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "response_format": _schema(schema)}
        cat = load_catalog(catalog)
        if base_url:
            from ..models.catalog import ModelSpec

            cat = cat.with_spec(ModelSpec(model, "openai", model, base_url=base_url, description=f"at {base_url}"))
        if no_log:
            asyncio.run(_session(cat, model, system, text, opts, as_json, None, []))
            return
        with open_store(db) as store:
            history: list[Message] = []
            link: dict[str, str] = {}
            if cont or conversation:
                history, link = _history(store, conversation)
                system = None  # the conversation's own system turn is in its history
            asyncio.run(_session(cat, model, system, text, opts, as_json, store, history, link))


def _schema(path: Path | None) -> ResponseFormat | None:
    if path is None:
        return None
    try:
        return ResponseFormat.json_schema(json.loads(path.read_text()))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the schema: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None


def _history(store: Any, cid: str | None) -> tuple[list[Message], dict[str, str]]:
    """The turns of conversation ``cid`` (default: the last one logged), oldest first, and the link
    the next turn carries (its conversation id and the turn before it)."""
    last = _last_of(store, cid) if cid else next(iter(store.runs(workflow=CHAT, limit=1)), None)
    if last is None:
        raise ConfigError(f"no conversation {cid!r} in {store.path}" if cid else f"no conversation to continue in {store.path}: "
                          "start one with turnout chat")
    turns, row = [], last
    while row is not None and len(turns) < _MAX_TURNS:
        if row.tags.get("redacted") == "1":
            raise ConfigError(f"conversation {row.tags.get('conversation')}: the store keeps digests, not texts (--redact): "
                              "it cannot be continued")
        turns.append(row)
        prev = row.tags.get("previous")
        row = next(iter(store.runs(run_id=prev, limit=1)), None) if prev else None
    msgs: list[Message] = []
    for r in reversed(turns):
        if r.tags.get("system"):
            msgs = [Message.system(r.tags["system"])]  # the conversation's system turn (its first run's)
        msgs += [Message.user(r.input or ""), Message.assistant(r.output or "")]
    return msgs, {"conversation": last.tags.get("conversation", last.run_id), "previous": last.run_id}


def _last_of(store: Any, cid: str) -> Any:
    """The newest run of conversation ``cid`` (its id or an id prefix of its newest turn)."""
    for r in store.runs(workflow=CHAT, limit=2000):
        if r.tags.get("conversation") == cid or r.run_id.startswith(cid):
            return r
    return None


async def _session(cat: Any, name: str, system: str | None, text: str | None, opts: dict[str, Any], as_json: bool, store: Any,
                   history: list[Message], link: dict[str, str] | None = None) -> None:
    """One turn (``text``), or turn after turn read from stdin, each logged to ``store`` as a run."""
    from .._scope import open_run

    link = dict(link or {"conversation": secrets.token_hex(8)})
    msgs = list(history) or ([Message.system(system)] if system else [])
    sink = MemorySink()
    m = cat.model(name, sink=sink)
    try:
        while True:
            turn = text if text is not None else await _read_turn(bool(msgs))
            if turn is None:
                return
            msgs.append(Message.user(turn))
            req = Request(tuple(msgs), **opts)
            tags = {**link, "model": name, **({"system": system} if system and "previous" not in link else {}),
                    **({"redacted": "1"} if store is not None and store.redact else {})}
            with open_run(store, CHAT, turn, tags=tags) as run:
                answer = await _answer(m, req, as_json, sink)
                run.output = answer
            msgs.append(Message.assistant(answer))
            link["previous"] = run.run_id
            if text is not None:
                return
    finally:
        await cat.aclose()


async def _read_turn(started: bool) -> str | None:
    """The next line the user types (off the event loop); None at Ctrl-D, 'exit' or 'quit'."""
    tty = sys.stdin.isatty()
    if tty and not started:
        err_console.print("[dim]chatting — Ctrl-D or 'exit' to stop[/]")
    while True:
        if tty:
            sys.stderr.write("> ")
            sys.stderr.flush()
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip().lower() in _QUIT:
            return None
        if line.strip():
            return line.rstrip("\n")


async def _answer(m: Any, req: Request, as_json: bool, sink: MemorySink) -> str:
    if as_json:
        c = await m.complete(req)
        print(json.dumps({
            "model": c.model, "text": c.text, "finish_reason": c.finish_reason,
            "usage": {"input_tokens": c.usage.input_tokens, "output_tokens": c.usage.output_tokens},
            "cost_usd": c.cost_usd, "latency_s": round(c.latency_s, 4),
        }), flush=True)
        return str(c.text)
    parts, last = [], None
    async for chunk in m.stream(req):
        if chunk.delta:
            parts.append(chunk.delta)
            sys.stdout.write(chunk.delta)
            sys.stdout.flush()
        last = chunk
    sys.stdout.write("\n")
    if last is not None and last.usage is not None:
        ev = sink.events[-1] if sink.events else None
        extra = f", fallback {ev.fallback}" if ev is not None and ev.fallback else ""
        err_console.print(
            f"[dim]{escape(last.model or '')} · {last.usage.input_tokens} in / {last.usage.output_tokens} out tokens · "
            f"${last.cost_usd:.6f} · {last.latency_s:.2f}s{escape(extra)}[/]"
        )
    return "".join(parts)
