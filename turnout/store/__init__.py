"""Trace store: runs, steps, model calls, routing decisions, verdicts, sections, feedback, experiments
and the batch ledger — SQLite by default, PostgreSQL by URL (``open_store``)."""

from __future__ import annotations

import os as _os
from typing import Any as _Any

from ._queue import check_resolution as check_resolution
from .base import BatchLedger as BatchLedger
from .base import CallRow as CallRow
from .base import DecisionRow as DecisionRow
from .base import EscalationQueue as EscalationQueue
from .base import FeedbackStore as FeedbackStore
from .base import KeyTable as KeyTable
from .base import RunReader as RunReader
from .base import RunRow as RunRow
from .base import Store as Store
from .base import Tee as Tee
from .base import TraceStore as TraceStore
from .base import active_run as active_run
from .sqlite import MIGRATIONS as MIGRATIONS
from .sqlite import SQLiteStore as SQLiteStore
from .sqlite import StoreError as StoreError
from .sqlite import current_run as current_run
from .sqlite import default_path as default_path

__all__ = [
    "BatchLedger",
    "CallRow",
    "DecisionRow",
    "EscalationQueue",
    "FeedbackStore",
    "KeyTable",
    "MIGRATIONS",
    "RunReader",
    "RunRow",
    "SQLiteStore",
    "Store",
    "StoreError",
    "Tee",
    "TraceStore",
    "active_run",
    "check_resolution",
    "current_run",
    "default_path",
    "open_store",
]


def open_store(target: str | _os.PathLike[str] | None = None, **kw: _Any) -> SQLiteStore:
    """A PostgreSQL store for a ``postgresql://`` URL, else a SQLite file (default ``$TURNOUT_DB`` or
    ``./.turnout/turnout.db``; ``TURNOUT_DB`` may itself be a PostgreSQL URL). ``redact`` defaults to
    ``$TURNOUT_REDACT``. Secrets are never stored either way (``turnout._secrets``).
    ``existing=True`` (the read commands: report, logs, keys list, …): a SQLite file that does not exist
    is a ``ConfigError`` naming it, never a new empty store that reports nothing."""
    t = str(target) if target is not None else _os.environ.get("TURNOUT_DB")
    if kw.pop("existing", False) and not (t and t.startswith(("postgresql://", "postgres://"))):
        from pathlib import Path

        from .._errors import ConfigError

        p = Path(t) if t else default_path()
        if not p.exists():
            where = "--db / $TURNOUT_DB" if t else "the default store (--db or $TURNOUT_DB to read another)"
            raise ConfigError(f"{p}: no such trace store ({where}); nothing has been traced there yet")
    if "redact" not in kw:  # TURNOUT_REDACT=1: store sha256 digests instead of input and output texts
        kw["redact"] = _os.environ.get("TURNOUT_REDACT", "").lower() in ("1", "true", "yes", "on")
    if t and t.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(t, **kw)
    return SQLiteStore(t, **kw)
