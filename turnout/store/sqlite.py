"""SQLite trace store: one file, WAL mode, numbered migrations applied on open, batched writes.

``record_*`` only appends to a queue; a daemon thread writes the queue in one transaction every
``flush_interval`` seconds (or when ``batch`` rows are waiting), so tracing stays off the hot path.
Two processes can share a file (WAL + a busy timeout). If writing fails, the failure is logged
once and the rows are kept for the next attempt (up to ``max_pending``); ``strict=True`` raises
the failure from the next ``record``/``flush`` call instead.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._errors import ConfigError, TurnoutError
from .._scope import active_run, open_run
from .._secrets import scrub, scrub_row
from ._cache import CacheTables
from ._dialect import SQLITE, Dialect
from ._migrations import MIGRATIONS
from ._queue import Queue, QueueTables
from ._read import Readers
from ._rollups import Rollups, key_rollup_statement, lat_bucket, rollup_statements
from ._sync import SyncTables
from .base import text_or_hash

__all__ = ["MIGRATIONS", "SQLiteStore", "StoreError", "current_run", "default_path"]

log = logging.getLogger(__name__)

class StoreError(TurnoutError):
    """The trace store could not write (raised only by a store opened with ``strict=True``)."""


def current_run() -> str | None:
    """The id of the run the current task is inside (``with store.run(...)``), else None."""
    a = active_run()
    return a[1] if a is not None else None


def _busy_timeout_from_env() -> float:
    """``TURNOUT_DB_BUSY_TIMEOUT``: seconds a SQLite write waits for another process's lock (default 5)."""
    raw = os.environ.get("TURNOUT_DB_BUSY_TIMEOUT", "").strip()
    if not raw:
        return 5.0
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not 0 < v <= 3600:
        raise ConfigError(f"TURNOUT_DB_BUSY_TIMEOUT={raw!r}: give seconds in (0, 3600]")
    return v


def default_path() -> Path:
    """``TURNOUT_DB`` or ``./.turnout/turnout.db``."""
    return Path(os.environ.get("TURNOUT_DB") or Path(".turnout") / "turnout.db")


class SQLiteStore(SyncTables, QueueTables, CacheTables, Rollups, Readers):
    dialect: Dialect = SQLITE  # what differs between databases (PostgresStore: POSTGRES)
    _db_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    # the failures of the database itself (locked, read-only, full, gone): rows are kept and retried;
    # any other failure is a bad row, which is dropped alone (logged, counted in ``dropped``)
    _transient_errors: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        redact: bool = False,
        strict: bool = False,
        flush_interval: float = 0.2,
        batch: int = 500,
        max_pending: int = 100_000,
        reconnect_interval: float = 5.0,
        busy_timeout: float | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.busy_timeout = busy_timeout if busy_timeout is not None else _busy_timeout_from_env()
        self.redact, self.strict = redact, strict
        self.flush_interval, self.batch, self.max_pending = flush_interval, batch, max_pending
        self._q: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()  # one writer at a time (flusher thread or an explicit flush)
        self._error: BaseException | None = None
        self._reported = False
        self.dropped = 0
        self.reconnect_interval = reconnect_interval
        self._db: Any = None
        self._closed = False
        self._retry_at = 0.0
        try:
            self._connect()
        except (*self._db_errors, sqlite3.Error, OSError) as e:
            msg = f"{self.path}: cannot open the trace store: {self._describe(e)}"
            if strict:
                raise ConfigError(msg) from None
            # not strict: the run goes on; rows queue up and the store is retried from the flusher
            self._error, self._reported = e, True
            self._retry_at = time.monotonic() + reconnect_interval
            log.warning("turnout %s; the run goes on, rows are kept and the store is retried every %gs", msg, reconnect_interval)
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="turnout-trace-flush", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, redact={self.redact})"

    def _describe(self, e: BaseException) -> str:
        return scrub(str(e))

    def _connect(self) -> None:
        db = self._open()
        try:
            self._db = db
            self._migrate()
        except BaseException:
            self._db = None
            db.close()
            raise

    @property
    def connected(self) -> bool:
        """False while the database cannot be opened (rows are queued meanwhile)."""
        return self._db is not None

    def _reading(self) -> Any:
        """Flush, then the connection to read from (StoreError when the store cannot be reached)."""
        if self._db is None:
            self._retry_at = 0.0  # a reader asks now: try to reach the store again at once
        self.flush()
        if self._db is None:
            self._reconnect()
        if self._db is None:
            raise StoreError(f"{self.path}: the trace store cannot be reached: {self._describe(self._error) if self._error else 'closed'}")
        return self._db

    def _open(self) -> Any:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=self.busy_timeout, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        db.create_function("turnout_lat_bucket", 1, lat_bucket, deterministic=True)  # migration 14's rollups
        return db

    # -- schema ------------------------------------------------------------------------------------
    def _migrate(self) -> None:
        db = self._db
        d = self.dialect
        db.execute(d.ddl("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at $real NOT NULL)"))
        done = {v for (v,) in db.execute("SELECT version FROM schema_migrations")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            db.execute(d.begin_write)
            try:
                # re-checked inside the write lock: another process may have just applied it
                if db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone() is None:
                    for statement in d.ddl(sql).split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        row = self._reading().execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # -- writing (hot path: enqueue only) ------------------------------------------------------------
    def _put(self, kind: str, row: tuple[Any, ...]) -> None:
        if self._error is not None and self.strict:
            err, self._error = self._error, None
            raise StoreError(f"{self.path}: trace store write failed: {self._describe(err)}") from None
        if len(self._q) >= self.max_pending:
            self._q.popleft()
            self.dropped += 1
        self._q.append((kind, row))
        if len(self._q) >= self.batch and not self._kick.is_set():
            # a full batch: the flusher writes now instead of at its next tick (set once: while the
            # writer is behind, every row would otherwise take the event's lock and notify again)
            self._kick.set()

    @contextmanager
    def run(self, workflow: str, input: str | None = None, *, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """``with store.run("triage", text) as run_id:`` — calls and decisions inside are attributed to it."""
        with open_run(self, workflow, input, tags=tags) as run:
            yield run.run_id

    @property
    def queue(self) -> Queue:
        """The escalation queue's async door: ``await store.queue()``, ``await store.queue.resolve(...)``."""
        return Queue(self)

    def _run_id(self) -> str | None:
        a = active_run()
        return a[1] if a is not None and a[0] is self else None

    def start_run(self, workflow: str, input: str | None = None, *, tags: Mapping[str, str] | None = None) -> str:
        run_id = secrets.token_hex(16)  # 32 hex digits, as uuid4().hex gave, without building a UUID
        t = dict(tags or {})
        self._put("run", (run_id, workflow, "running", time.time(), text_or_hash(input, self.redact), json.dumps(t), t.get("key"), t.get("team")))
        return run_id

    def reopen_run(self, run_id: str) -> None:
        """A run that waited for a person runs again (the same row; ``finish_run`` ends it)."""
        self._put("reopen", (run_id,))

    def finish_run(self, run_id: str, *, status: str = "ok", output: str | None = None) -> None:
        self._put("finish", (status, time.time(), text_or_hash(output, self.redact), run_id))

    def record(self, event: Any) -> None:
        """Record a ``CallEvent`` (this makes the store a sink for ``Traced``)."""
        u = event.usage
        self._put("call", (self._run_id(), event.model, event.started_at, event.latency_s, int(event.ok), u.input_tokens,
                           u.output_tokens, event.cost_usd, event.error_type, event.retries, event.fallback, int(event.stream),
                           ",".join(event.tools) or None, int(event.cached), event.saved_usd))

    def record_decision(self, decision: Any, *, router: str = "", input: str | None = None, run_id: str | None = None) -> None:
        d = decision
        self._put("decision", (run_id or self._run_id(), router or d.stage or d.kind, d.route, d.chosen, d.confidence, d.outcome, d.kind,
                               d.stage, d.reason, d.latency_s, time.time(), text_or_hash(input, self.redact), json.dumps(dict(d.scores))))

    def add_feedback(self, run_id: str, *, score: float | None = None, labels: Mapping[str, str] | None = None,
                     comment: str | None = None) -> None:
        """Feedback on a run: a score, labels (``{"route": "billing"}`` = the correct route), a comment."""
        if not run_id:
            raise ConfigError("feedback needs a run id")
        db = self._reading()
        if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            raise ConfigError(f"no run {run_id!r} in {self.path}")
        self._put("feedback", (run_id, time.time(), score, json.dumps(dict(labels or {})), comment))
        self.flush()

    def record_verdict(self, verdict: Any, *, name: str = "vote", run_id: str | None = None) -> None:
        """A voting ``Verdict``: answer, outcome, agreement, samples used of planned, the tally."""
        v = verdict
        self._put("verdict", (run_id or self._run_id(), name, time.time(), v.answer, v.outcome, v.agreement, v.samples_used,
                              v.samples_planned, v.abstained, json.dumps(dict(v.counts)), v.cost_usd))

    def record_step(self, name: str, kind: str, *, latency_s: float, status: str = "ok", cost_usd: float = 0.0,
                    detail: Mapping[str, Any] | None = None, run_id: str | None = None) -> None:
        """One workflow step (route, section, vote, chain, call, ...) of a run."""
        self._put("step", (run_id or self._run_id(), name, kind, time.time(), latency_s, status, cost_usd,
                           json.dumps(dict(detail or {}), default=str)))

    def record_sections(self, step: str, envelopes: Sequence[Any], titles: Sequence[str] = (), *, run_id: str | None = None) -> None:
        """The fan-out envelopes of a sectioning step: status, error, cost, tokens, latency per section."""
        rid, now = run_id or self._run_id(), time.time()
        for e in envelopes:
            title = titles[e.index] if e.index < len(titles) else None
            self._put("section", (rid, step, e.index, title, e.status, str(e.error)[:300] if e.error else None, e.cost_usd,
                                  e.input_tokens, e.output_tokens, e.latency_s, now))

    def record_audit(self, rec: Any, *, run_id: str | None = None) -> None:
        """A compliance audit record: which model was sent (or refused) which data classes, and the
        sha256 of the text — never the text."""
        self._put("audit", (run_id or self._run_id(), rec.at or time.time(), rec.model, rec.action, ",".join(rec.data_classes),
                            rec.digest, rec.reason))

    def record_outcome(self, experiment: str, variant: str, *, unit: str | None = None, cost_usd: float = 0.0,
                       latency_s: float = 0.0, error: bool = False, correct: bool | None = None, score: float | None = None) -> None:
        """One unit's outcome in an A/B experiment (see ``turnout.store.experiments``)."""
        self._put("outcome", (experiment, variant, unit, self._run_id(), time.time(), cost_usd, latency_s, int(error),
                              None if correct is None else int(correct), score))

    # -- tables written at once, not queued (the batch ledger and API keys: see _sync.py) ----------------
    def _now(self, sql: str, args: tuple[Any, ...], *, fetch: bool = False) -> list[Any]:
        """Run one statement at once (committed when it returns); a database failure is a StoreError."""
        with self._lock:
            if self._db is None and not self._reconnect():
                raise StoreError(f"{self.path}: the store cannot be reached: {self._describe(self._error) if self._error else 'closed'}")
            try:
                cur = self._db.execute(sql, args if fetch else scrub_row(args))
                return list(cur.fetchall()) if fetch else []
            except self._db_errors as e:
                raise StoreError(f"{self.path}: the store refused a write or read ({self._describe(e)})") from None

    # -- the flusher -----------------------------------------------------------------------------------
    _SQL = {
        "run": "INSERT INTO runs (run_id, workflow, status, started_at, input, tags, key_id, team) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "run_done": "INSERT INTO runs (run_id, workflow, status, started_at, input, tags, key_id, team, finished_at, output) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "reopen": "UPDATE runs SET status = 'running' WHERE run_id = ?",
        "finish": "UPDATE runs SET status = ?, finished_at = ?, output = COALESCE(?, output) WHERE run_id = ?",
        "call": "INSERT INTO calls (run_id, model, started_at, latency_s, ok, input_tokens, output_tokens, cost_usd, error_type, "
                "retries, fallback, stream, tools, cached, saved_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "verdict": "INSERT INTO verdicts (run_id, name, at, answer, outcome, agreement, samples_used, samples_planned, abstained, "
                   "counts, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "outcome": "INSERT INTO experiment_outcomes (experiment, variant, unit, run_id, at, cost_usd, latency_s, error, correct, "
                   "score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "step": "INSERT INTO steps (run_id, name, kind, at, latency_s, status, cost_usd, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "section": "INSERT INTO sections (run_id, step, idx, title, status, error, cost_usd, input_tokens, output_tokens, latency_s, "
                   "at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "audit": "INSERT INTO audit (run_id, at, model, action, data_classes, digest, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
        "feedback": "INSERT INTO feedback (run_id, at, score, labels, comment) VALUES (?, ?, ?, ?, ?)",
        "decision": "INSERT INTO decisions (run_id, router, route, chosen, confidence, outcome, kind, stage, reason, latency_s, at, "
                    "input, scores) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    }

    def flush(self) -> None:
        """Write everything queued now (also called by the flusher thread and by ``close``).

        Every string is cleaned first (``turnout._secrets.clean``: no secret, no lone surrogate is
        ever stored). A failure of the database keeps the rows for the next attempt; a row the
        database refuses for itself is dropped alone, and the rest of its batch is written.
        """
        with self._lock:
            items: list[tuple[str, tuple[Any, ...]]] = []
            while self._q:
                kind, row = self._q.popleft()
                items.append((kind, scrub_row(row)))
            if not items:
                return
            if self._db is None and not self._reconnect():
                self._q.extendleft(reversed(items))
                return
            try:
                self._write(items)
                self._reported = False
            except Exception as e:  # noqa: BLE001 - classified below; the flusher must never lose the queue
                if isinstance(e, self._transient_errors) or not isinstance(e, self._db_errors + (ValueError, TypeError)):
                    self._q.extendleft(reversed(items))  # keep them for the next attempt
                    self._error = e
                    if not self._reported:
                        log.warning("turnout trace store %s: cannot write (%s); the run goes on, rows are kept and retried",
                                    self.path, self._describe(e))
                        self._reported = True
                else:
                    self._write_one_by_one(items)
        if self._error is not None and self.strict and threading.current_thread() is not self._thread:
            err, self._error = self._error, None
            raise StoreError(f"{self.path}: trace store write failed: {self._describe(err)}") from None

    def _write(self, items: list[tuple[str, tuple[Any, ...]]]) -> None:
        """One transaction; rolled back (never left open) on any failure."""
        self._db.execute(self.dialect.begin_write)
        try:
            calls: list[tuple[Any, ...]] = []
            for kind, rows in self._grouped(items):
                self._db.executemany(self._SQL[kind], rows)
                for sql, upserts in rollup_statements(kind, rows):  # the dashboard's hourly totals, in the same transaction
                    self._db.executemany(sql, upserts)
                if kind == "call":
                    calls += rows
            if calls:
                self._key_rollups(calls)
            self._db.execute("COMMIT")
        except BaseException:
            try:
                self._db.execute("ROLLBACK")
            except self._db_errors:
                pass
            raise

    def _key_rollups(self, calls: list[tuple[Any, ...]]) -> None:
        """Add a batch's calls to their keys' hourly spend: the runs' keys read by run id (inserted
        already, in this transaction), 500 ids a query."""
        ids = list({r[0] for r in calls if r[0]})
        keys: dict[str, tuple[str, str]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = f"SELECT run_id, key_id, team FROM runs WHERE key_id IS NOT NULL AND run_id IN ({', '.join('?' * len(chunk))})"
            for rid, key, team in self._db.execute(q, chunk):
                keys[rid] = (key, team or "")
        if keys:
            sql, rows = key_rollup_statement(calls, keys)
            self._db.executemany(sql, rows)

    _RUN_UPDATES = ("reopen", "finish")

    @classmethod
    def _grouped(cls, items: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """The batch as few ``executemany`` groups as it can be: every insert of one table together
        (rows of a kind keep their order), then the updates of runs (finish, reopen) in their order —
        after every insert, so a run started and finished in one batch is inserted first. A run
        started and finished once in the batch (most gateway requests) is one insert of the finished
        row, not an insert and an update."""
        inserts: dict[str, list[tuple[Any, ...]]] = {}
        updates: list[tuple[str, tuple[Any, ...]]] = []
        for kind, row in items:
            if kind in cls._RUN_UPDATES:
                updates.append((kind, row))
            else:
                inserts.setdefault(kind, []).append(row)
        started = inserts.get("run")
        if started and updates:
            touched: dict[str, int] = {}
            for kind, row in updates:
                rid = row[-1]
                touched[rid] = touched.get(rid, 0) + (1 if kind == "finish" else 2)  # a reopen: never folded
            new = {r[0] for r in started}  # only a run inserted in this very batch can be folded
            finish = {row[-1]: row for kind, row in updates if kind == "finish" and touched[row[-1]] == 1 and row[-1] in new}
            if finish:
                keep, done = [], []
                for r in started:
                    f = finish.get(r[0])
                    if f is None:
                        keep.append(r)
                    else:  # (run_id, workflow, status, started_at, input, tags, key_id, team) + the finish's status, time, output
                        done.append((r[0], r[1], f[0], r[3], r[4], r[5], r[6], r[7], f[1], f[2]))
                inserts["run"] = keep
                inserts["run_done"] = done
                updates = [(k, r) for k, r in updates if not (k == "finish" and r[-1] in finish)]
        groups = [(k, rows) for k, rows in inserts.items() if rows]
        return [*groups, *((k, [r for _, r in g]) for k, g in itertools.groupby(updates, key=lambda it: it[0]))]

    def _write_one_by_one(self, items: list[tuple[str, tuple[Any, ...]]]) -> None:
        """After a batch failed on a bad row: each row in its own transaction; bad ones are dropped."""
        for i, item in enumerate(items):
            try:
                self._write([item])
            except Exception as e:  # noqa: BLE001
                if isinstance(e, self._transient_errors):  # the database went away meanwhile: keep the rest
                    self._q.extendleft(reversed(items[i:]))
                    self._error = e
                    return
                self.dropped += 1
                log.warning("turnout trace store %s: a %s row could not be stored and was dropped (%s)", self.path, item[0],
                            self._describe(e))

    def _reconnect(self) -> bool:
        """Try to open the store again (at most every ``reconnect_interval`` seconds)."""
        if self._closed or time.monotonic() < self._retry_at:
            return False
        try:
            self._connect()
        except (*self._db_errors, sqlite3.Error, OSError) as e:
            self._error = e
            self._retry_at = time.monotonic() + self.reconnect_interval
            return False
        log.warning("turnout trace store %s: reachable again; writing %d queued rows", self.path, len(self._q))
        self._error, self._reported = None, False
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(self.flush_interval)
            self._kick.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the flusher never dies; errors are reported by flush()
                pass

    def close(self) -> None:
        self._stop.set()
        self._kick.set()
        self._thread.join(timeout=5)
        self._retry_at = 0.0  # one last attempt
        self.flush()
        if self._db is None:
            if self._q:
                log.warning("turnout trace store %s: closed while unreachable; %d rows not written", self.path, len(self._q))
        else:
            self._db.close()
            self._db = None
        self._closed = True

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
