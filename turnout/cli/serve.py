"""``turnout serve`` (the gateway) and ``turnout keys create|list|revoke`` (its virtual API keys)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._errors import ConfigError
from ._common import CatalogOpt, DbOpt, err_console, friendly_errors, load_catalog

keys_app = typer.Typer(no_args_is_help=True, help="Virtual API keys for the gateway (stored hashed in the trace store).")

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _load_workflows(paths: list[Path], catalog: object) -> dict[str, object]:
    from ..workflows import Workflow

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted([*p.glob("*/workflow.yaml"), *p.glob("*.yaml")])
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such workflow file or directory")
    out: dict[str, object] = {}
    for f in files:
        wf = Workflow.load(f, catalog=catalog)
        if wf.name in out:
            raise ConfigError(f"{f}: a workflow named {wf.name!r} is already loaded; names must be unique")
        out[wf.name] = wf
    return out


_WORKER_ENV = "TURNOUT_SERVE_WORKER"  # the options of ``turnout serve --workers N``, for each worker process


def _gateway(o: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(app, gateway, store) from the serve options (the one way, in the server process or in each worker)."""
    from ..server import Gateway, create_app
    from ..store import open_store

    cat = load_catalog(Path(o["catalog"]) if o["catalog"] else None, providers=False)
    store = open_store(o["db"], redact=o["redact"])
    wfs = _load_workflows([Path(p) for p in o["workflows"]], cat)
    from ..server.access import AccessLog

    gw = Gateway(cat, store, wfs, auth=o["auth"], redis_url=o["redis_url"], max_body=o["max_body"], dashboard=o["dashboard"],
                 allowed_hosts=tuple(o["allowed_hosts"]), access_log=AccessLog(o["log_format"]) if o["access_log"] else None)
    return create_app(gw), gw, store


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn stops gracefully on SIGTERM, then raises the signal again with the handler it found:
    with the default one the process dies there, before ``finally`` and ``atexit`` — the trace rows
    still queued and the spans still batched were lost. A handler that exits lets both run."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def worker_app() -> Any:
    """The app of one ``turnout serve --workers N`` worker (uvicorn's factory, in each worker process)."""
    import atexit

    _exit_cleanly_on_sigterm()
    from . import _tracing

    _tracing()  # each worker process exports its own spans (uvicorn starts it fresh)
    app, _, store = _gateway(json.loads(os.environ[_WORKER_ENV]))
    atexit.register(store.close)  # the rows still queued are written when the worker exits
    return app


def _check(host: str, no_auth: bool, workers: int, redis_url: str | None, log_format: str) -> None:
    if no_auth and host not in _LOOPBACK:
        raise ConfigError(f"--no-auth is only allowed on a loopback address, not {host!r}: create keys with turnout keys create")
    if workers > 1 and not redis_url:
        raise ConfigError(f"--workers {workers} needs --redis (or TURNOUT_REDIS_URL): each worker is a process, and rate limits, "
                          "budgets and the response cache must be shared by all of them")
    if log_format not in ("text", "json"):
        raise ConfigError(f"--log-format must be text or json, not {log_format!r}")


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback unless you say otherwise)."),
    port: int = typer.Option(8000, "--port"),
    workflow: list[Path] = typer.Option([], "--workflow", "-w", help="Workflow file or directory of them (repeatable)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Accept requests without a key (loopback only; for local use)."),
    redis_url: str | None = typer.Option(None, "--redis", envvar="TURNOUT_REDIS_URL",
                                         help="Share rate limits and budgets between replicas through Redis."),
    max_body: int = typer.Option(2_000_000, "--max-body", help="Largest request body in bytes."),
    dashboard: bool | None = typer.Option(None, "--dashboard/--no-dashboard",
                                          help="Serve the dashboard at / (default: on for a loopback address, off otherwise)."),
    log_level: str = typer.Option("warning", "--log-level", help="The server's own messages (uvicorn's): debug, info, warning, error."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log",
                                    help="A line per request on stderr: method, path, status, key id (never the key), model, route, "
                                         "cost, latency."),
    log_format: str = typer.Option("text", "--log-format", help="The access log's format: text, or json (one object a line)."),
    allowed_host: list[str] = typer.Option([], "--allowed-host",
                                           help="A Host name clients use besides loopback (repeatable; '*' = any). Others get 421."),
    redact: bool = typer.Option(False, "--redact", envvar="TURNOUT_REDACT",
                                help="Store sha256 digests instead of prompt and answer texts."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes on one port (needs --redis when > 1: one limit for all)."),
    catalog: Path | None = CatalogOpt,
    db: str | None = DbOpt,
) -> None:
    """Serve the OpenAI-compatible gateway: /v1/chat/completions, /v1/models, /v1/embeddings, workflow
    runs, /metrics, /healthz, /readyz."""
    with friendly_errors():
        try:
            import uvicorn

            from ..server import Gateway  # noqa: F401  (the server extra is installed)
        except ImportError:
            raise ConfigError("turnout serve needs the server extra: pip install 'turnout[server]'") from None

        _check(host, no_auth, workers, redis_url, log_format)
        dash = dashboard if dashboard is not None else host in _LOOPBACK
        hosts = tuple(allowed_host) + (() if host in _LOOPBACK or host in ("0.0.0.0", "::") else (host,))
        opts = {"catalog": str(catalog) if catalog else None, "db": db, "redact": redact, "workflows": [str(w) for w in workflow],
                "auth": not no_auth, "redis_url": redis_url, "max_body": max_body, "dashboard": dash, "allowed_hosts": list(hosts),
                "access_log": access_log, "log_format": log_format}
        banner = (f"auth {'off (loopback)' if no_auth else 'on'}, limits {'in Redis' if redis_url else 'in this process'}"
                  + (f", dashboard at http://{host}:{port}/" if dash else ""))
        if workers > 1:
            cat = load_catalog(catalog, providers=False)
            wfs = _load_workflows(workflow, cat)  # a bad catalog or workflow is reported before any worker starts
            err_console.print(f"turnout gateway on http://{host}:{port} — {workers} workers, {len(cat.names())} models + turnout/auto, "
                              f"{len(wfs)} workflows, {banner}")
            os.environ[_WORKER_ENV] = json.dumps(opts)
            uvicorn.run("turnout.cli.serve:worker_app", factory=True, workers=workers, host=host, port=port, log_level=log_level,
                        access_log=False, lifespan="on")
            return
        _exit_cleanly_on_sigterm()
        app, gw, store = _gateway(opts)
        err_console.print(f"turnout gateway on http://{host}:{port} — {len(gw.catalog.names())} models + turnout/auto, "
                          f"{len(gw.workflows)} workflows, traces in {store.path}, {banner}")
        try:
            uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")
        finally:
            store.close()


@keys_app.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the key (unique)."),
    model: list[str] = typer.Option([], "--model", "-m", help="A model it may use (repeatable; '*' = all, 'gpt-*' = a prefix)."),
    workflow: list[str] = typer.Option([], "--workflow", "-w", help="A workflow it may run (repeatable; '*' = all)."),
    rpm: float | None = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: float | None = typer.Option(None, "--tpm", help="Estimated tokens per minute."),
    budget: float | None = typer.Option(None, "--budget", help="USD it may spend (per --period, else in total)."),
    period: str | None = typer.Option(None, "--period", help="hour, day, week or month."),
    team: str | None = typer.Option(None, "--team", help="Team the key's spend is attributed to."),
    cache_ttl: float | None = typer.Option(None, "--cache-ttl", help="Answer its repeated requests from the response cache, "
                                           "kept this many seconds (temperature 0 only, unless --cache-sampled)."),
    cache_semantic: float | None = typer.Option(None, "--cache-semantic",
                                                help="Also serve near-identical requests: the cosine similarity (0-1) of the last user turn."),
    cache_sampled: bool = typer.Option(False, "--cache-sampled", help="Also cache requests that sample (temperature > 0 or unset)."),
    db: str | None = DbOpt,
) -> None:
    """Create a key; its secret is printed once and only its hash is stored."""
    from ..server.keys import KeyRing
    from ..store import open_store

    with friendly_errors(), open_store(db, strict=True) as store:
        given = {k: v for k, v in (("ttl", cache_ttl), ("semantic", cache_semantic), ("sampled", cache_sampled or None)) if v is not None}
        cache = given or None  # CacheSettings fills in the rest (and checks it)
        secret, key = KeyRing(store).create(name, models=model, workflows=workflow, rpm=rpm, tpm=tpm, budget_usd=budget,
                                            period=period, team=team, cache=cache)
        err_console.print(f"created {key.key_id} ({escape(name)}); the secret below is shown once — store it now:")
        print(secret)


@keys_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json"), db: str | None = DbOpt) -> None:
    """The keys: scope, limits, budget and spend so far (never their secrets)."""
    from .._types import period_start
    from ..server.keys import KeyRing
    from ..store import open_store

    with friendly_errors(), open_store(db, strict=True, existing=True) as store:
        rows = []
        for k in KeyRing(store).list():
            spent = store.spend(since=period_start(k.period, time.time()) if k.period else None, key=k.key_id)
            rows.append({"key_id": k.key_id, "name": k.name, "models": list(k.models), "workflows": list(k.workflows), "rpm": k.rpm,
                         "tpm": k.tpm, "budget_usd": k.budget_usd, "period": k.period, "team": k.team, "spent_usd": round(spent, 8),
                         "created_at": k.created_at, "revoked": k.revoked_at is not None})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="turnout keys", title_justify="left")
    for col in ("id", "name", "models", "workflows", "rpm", "budget", "spent", "team", "state"):
        t.add_column(col)
    for r in rows:
        budget = f"${r['budget_usd']:g}{'/' + r['period'] if r['period'] else ''}" if r["budget_usd"] else "-"
        t.add_row(*(escape(str(x)) for x in (r["key_id"], r["name"], ",".join(r["models"]) or "-", ",".join(r["workflows"]) or "-",
                                             r["rpm"] or "-", budget, f"${r['spent_usd']:.6f}", r["team"] or "-",
                                             "revoked" if r["revoked"] else "active")))
    Console(width=None if sys.stdout.isatty() else 200).print(t if rows else "[dim]no keys yet: turnout keys create NAME -m MODEL[/]")


@keys_app.command("revoke")
def revoke(key: str = typer.Argument(..., help="Key id or name."), db: str | None = DbOpt) -> None:
    """Revoke a key (servers stop accepting it within 5 seconds)."""
    from ..server.keys import KeyRing
    from ..store import open_store

    with friendly_errors(), open_store(db, strict=True, existing=True) as store:
        if not KeyRing(store).revoke(key):
            raise ConfigError(f"no active key {key!r}")
        err_console.print(f"revoked {escape(key)}")

