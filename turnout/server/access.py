"""What every gateway request leaves behind, in one place: an access-log line, its request metrics,
and the ``x-ratelimit-*`` headers of a key with limits.

``Observed`` wraps the whole ASGI app (the chat fast path included). It opens a small record for
the request in a context variable; the handlers and the request lifecycle fill it as they learn
things (``note(key=…, model=…, ttft_s=…)``), the response headers add what the handler answered
with (``x-turnout-model``, ``-route``, ``-cost-usd``, ``-run-id``), and when the response is over —
a stream's last byte included — the line is written and the metrics observed. The key is logged
by its id, never its secret; the path without its query string.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from .. import _telemetry
from ..store.metrics import endpoint

__all__ = ["AccessLog", "Observed", "note", "ratelimit_headers"]

_REQUEST: ContextVar[dict[str, Any] | None] = ContextVar("turnout_request", default=None)
_FROM_HEADERS = {b"x-turnout-model": "served", b"x-turnout-route": "route", b"x-turnout-cost-usd": "cost_usd", b"x-turnout-run-id": "run_id"}


def note(**fields: Any) -> None:
    """Add to the current request's record (nothing outside a request)."""
    d = _REQUEST.get()
    if d is not None:
        d.update(fields)


def _reset_in(seconds: float) -> str:
    """OpenAI's duration format for the reset headers: ``1s``, ``6m0s``, ``1h2m3s``, ``250ms``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{sec}s"


def ratelimit_headers(left: dict[str, tuple[float, float, float]]) -> list[tuple[bytes, bytes]]:
    """``x-ratelimit-limit|remaining|reset-requests|tokens`` from ``RateLimiter.remaining()``."""
    out = []
    for what, (limit, remaining, reset) in left.items():
        out += [(f"x-ratelimit-limit-{what}".encode(), f"{limit:g}".encode()),
                (f"x-ratelimit-remaining-{what}".encode(), str(int(remaining)).encode()),
                (f"x-ratelimit-reset-{what}".encode(), _reset_in(reset).encode())]
    return out


class AccessLog:
    """One line per request: ``text`` for people, ``json`` (one object a line) for a log pipeline.
    Written straight to ``stream`` (stderr, line-buffered) — the logging module and its secret
    scrubbing factory cost ~30 µs a line, 18% of the gateway's throughput here; every field is the
    server's own (a key id, a catalog name, numbers) but the path, which is scrubbed. Pass
    ``logger=`` to send the lines through logging instead."""

    FIELDS = ("ts", "client", "method", "path", "status", "key", "team", "model", "served", "route", "cost_usd", "latency_s", "ttft_s",
              "run_id")

    def __init__(self, fmt: str = "text", *, stream: Any = None, logger: logging.Logger | None = None) -> None:
        if fmt not in ("text", "json"):
            from .._errors import ConfigError

            raise ConfigError(f"--log-format must be text or json, not {fmt!r}")
        self.fmt, self.stream, self.logger = fmt, stream, logger

    def line(self, rec: dict[str, Any]) -> str:
        if self.fmt == "json":
            return json.dumps({k: rec[k] for k in self.FIELDS if rec.get(k) is not None}, ensure_ascii=False)
        extra = " ".join(f"{k}={rec[k]}" for k in ("key", "team", "model", "served", "route", "run_id") if rec.get(k))
        cost = f" ${rec['cost_usd']:.6f}" if rec.get("cost_usd") is not None else ""
        ttft = f" ttft {rec['ttft_s'] * 1000:.0f}ms" if rec.get("ttft_s") is not None else ""
        return (f"{rec['ts']} {rec['client']} \"{rec['method']} {rec['path']}\" {rec['status']} {rec['latency_s'] * 1000:.1f}ms"
                f"{ttft}{cost}" + (f" {extra}" if extra else ""))

    def write(self, rec: dict[str, Any]) -> None:
        from .._secrets import scrub_row

        rec["path"] = scrub_row((rec["path"],))[0]  # a client chooses the path: a key pasted into it is masked
        line = self.line(rec)
        if self.logger is not None:
            self.logger.info(line)
            return
        try:
            (self.stream or sys.stderr).write(line + "\n")
        except (OSError, ValueError):  # stderr closed or gone: the request was still served
            pass


class Observed:
    """The ASGI app with the access log, request metrics and rate-limit headers (module docstring)."""

    def __init__(self, app: Any, *, access_log: AccessLog | None, metrics: Any) -> None:
        self.app, self.access_log, self.metrics = app, access_log, metrics

    def __getattr__(self, name: str) -> Any:  # .state, .routes, .openapi() ... are the app's
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (self.access_log is None and self.metrics is None and not _telemetry.enabled()):
            await self.app(scope, receive, send)
            return
        rec: dict[str, Any] = {"status": 500}
        token = _REQUEST.set(rec)
        t0 = time.perf_counter()

        async def send_observed(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                rec["status"] = msg["status"]
                for k, v in msg.get("headers", ()):
                    field = _FROM_HEADERS.get(k.lower() if isinstance(k, bytes) else k)
                    if field is not None and field not in rec:
                        rec[field] = v.decode("latin-1")
                if "ratelimit" not in rec and rec.get("rates") is not None:
                    rec["ratelimit"] = await rec["rates"]()
                if rec.get("ratelimit"):
                    msg = {**msg, "headers": [*msg.get("headers", ()), *ratelimit_headers(rec["ratelimit"])]}
            await send(msg)

        try:
            if _telemetry.enabled():  # the request's server span: the root of its run's tree (or the caller's child)
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
                with _telemetry.span(f"{scope['method']} {endpoint(scope['path'])}", {"http.request.method": scope["method"],
                                     "url.path": scope["path"]}, headers=headers, server=True) as s:
                    await self.app(scope, receive, send_observed)
                    _telemetry.set_attributes(s, {"http.response.status_code": rec["status"], "turnout.key": rec.get("key")})
            else:
                await self.app(scope, receive, send_observed)
        finally:
            _REQUEST.reset(token)
            self._done(scope, rec, time.perf_counter() - t0)

    def _done(self, scope: Any, rec: dict[str, Any], latency: float) -> None:
        rec["latency_s"] = round(latency, 6)
        if isinstance(rec.get("cost_usd"), str):
            rec["cost_usd"] = float(rec["cost_usd"])
        if self.metrics is not None:
            self.metrics.record_request(scope["path"], rec)
        if self.access_log is not None:
            client = scope.get("client")
            rec.update(ts=_dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"), client=client[0] if client else "-",
                       method=scope["method"], path=scope["path"])  # never the query string
            self.access_log.write(rec)
