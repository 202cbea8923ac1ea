"""Trace store: runs, model calls and routing decisions (SQLite now; PostgreSQL next)."""

from .base import CallRow as CallRow
from .base import DecisionRow as DecisionRow
from .base import RunRow as RunRow
from .base import Tee as Tee
from .base import TraceStore as TraceStore
from .sqlite import MIGRATIONS as MIGRATIONS
from .sqlite import SQLiteStore as SQLiteStore
from .sqlite import StoreError as StoreError
from .sqlite import current_run as current_run
from .sqlite import default_path as default_path

__all__ = [
    "CallRow",
    "DecisionRow",
    "MIGRATIONS",
    "RunRow",
    "SQLiteStore",
    "StoreError",
    "Tee",
    "TraceStore",
    "current_run",
    "default_path",
]
