"""Spans for the tracing backend, off until switched on (``turnout.store.otel.setup()`` — what
``turnout serve|run|batch`` do when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set — or ``enable()`` with
an application's own tracer provider).

The lifecycle code calls these at the places a span belongs — a run (``open_run``), a workflow
step (``Node.run``), a routing decision, a vote, a set of sections, a fan-out branch, a model call
(``Traced``) — and each is one global read while tracing is off. The backend (``OTelTracing``
in ``turnout.store.otel``) keeps the span tree: each span is the child of the one open in the
calling context, so concurrent branches each nest under their own parent.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["attached", "call", "current", "decision", "enabled", "flush", "install", "set_attributes", "span"]

_BACKEND: Any = None  # an OTelTracing, or None: tracing off


def install(backend: Any) -> None:
    """Switch spans on (a backend with ``span``, ``set``, ``call``, ``decision``, ``current``,
    ``attach``), or off with None."""
    global _BACKEND
    _BACKEND = backend


def enabled() -> bool:
    return _BACKEND is not None


class _Off:
    """The block's context while tracing is off: enters to None, and costs no generator."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_OFF = _Off()


def span(name: str, attributes: Mapping[str, Any] | None = None, *, headers: Any = None,
         server: bool = False) -> AbstractContextManager[Any]:
    """A span around the block, the child of the current one — or, with ``headers`` (an incoming
    request's), of the caller's span they carry (``traceparent``); yields it (None while tracing is
    off). An exception leaving the block marks it as an error."""
    b = _BACKEND
    if b is None:
        return _OFF  # the default: every fan-out branch, vote and run enters one of these
    return b.span(name, attributes or {}, headers=headers, server=server)  # type: ignore[no-any-return]


def set_attributes(s: Any, attributes: Mapping[str, Any]) -> None:
    if s is not None and _BACKEND is not None:
        _BACKEND.set(s, attributes)


def current() -> Any:
    """The calling context's span context, to re-enter later (``attached``); None while off."""
    return _BACKEND.current() if _BACKEND is not None else None


def attached(ctx: Any) -> AbstractContextManager[Any]:
    """Run the block in ``ctx`` (from ``current``): a stream's body, after its handler returned."""
    if ctx is None or _BACKEND is None:
        return _OFF
    return _BACKEND.attach(ctx)  # type: ignore[no-any-return]


def call(event: Any, provider: str, model_id: str) -> None:
    """A finished model call (a ``CallEvent``), as a span of its own start and end times."""
    b = _BACKEND
    if b is not None:
        b.call(event, provider, model_id)


def flush() -> None:
    """Send what the backend still holds (blocking: call it in a thread, or at the end of a process
    whose ``atexit`` may not run, such as a Ray worker)."""
    b = _BACKEND
    if b is not None and hasattr(b, "flush"):
        b.flush()


def decision(router: str, d: Any) -> None:
    """A routing decision, as a span of its own under the current one (its start: its latency ago)."""
    b = _BACKEND
    if b is not None:
        b.decision(router, d)
