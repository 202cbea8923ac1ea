"""PostgreSQL trace store for teams: the same store as SQLite (same migrations, batching and
failure handling) over psycopg 3. ``PostgresStore("postgresql://user:pass@host/db")``;
``pip install 'turnout[postgres]'``. The password never appears in errors or reprs.
"""

from __future__ import annotations

import re
from typing import Any

from .. import _secrets
from .._errors import ConfigError
from ._dialect import POSTGRES
from .sqlite import SQLiteStore

__all__ = ["PostgresStore"]

_MIGRATION_LOCK = 727_001  # pg_advisory_lock key: one process migrates at a time


class _Conn:
    """Just enough of sqlite3.Connection's surface over psycopg (queries in its paramstyle)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Any = ()) -> Any:
        return self.conn.execute(POSTGRES.query(sql), args or None)

    def executemany(self, sql: str, rows: list[Any]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(POSTGRES.query(sql), rows)

    def close(self) -> None:
        self.conn.close()


def scrub_url(url: str) -> str:
    m = re.search(r"://[^:/@]+:([^@]*)@", url)
    if m:
        _secrets.register(m.group(1))  # the password is scrubbed from every message from now on
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class PostgresStore(SQLiteStore):
    dialect = POSTGRES

    def __init__(self, url: str, *, connect_timeout: int = 10, **kw: Any) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError("the PostgreSQL store needs psycopg: pip install 'turnout[postgres]'") from None
        self.url = url
        self.connect_timeout = connect_timeout
        self._psycopg = psycopg
        self._db_errors = (psycopg.Error,)
        self._transient_errors = (psycopg.OperationalError,)
        super().__init__(scrub_url(url), **kw)

    @property  # type: ignore[override]
    def path(self) -> str:  # what messages name: the URL without its password
        return scrub_url(self.url)

    @path.setter
    def path(self, _: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"PostgresStore({scrub_url(self.url)!r}, redact={self.redact})"

    def _describe(self, e: BaseException) -> str:
        return _secrets.scrub(str(e).replace(self.url, scrub_url(self.url)))

    def _open(self) -> Any:
        return _Conn(self._psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout))

    def _migrate(self) -> None:
        self._db.execute(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
        try:
            super()._migrate()
        finally:
            self._db.execute(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
