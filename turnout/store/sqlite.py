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
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._errors import ConfigError, TurnoutError
from .._scope import spend_scope
from .._secrets import scrub, scrub_row
from ._sync import SyncTables
from .base import _ACTIVE, CallRow, DecisionRow, RunRow, text_or_hash

__all__ = ["MIGRATIONS", "SQLiteStore", "StoreError", "current_run", "default_path"]

log = logging.getLogger(__name__)

MIGRATIONS: list[tuple[int, str]] = []


def migration(version: int) -> Callable[[Callable[[], str]], Callable[[], str]]:
    """Register a numbered migration (its function returns the SQL). Applied in order, once."""
    def register(fn: Callable[[], str]) -> Callable[[], str]:
        MIGRATIONS.append((version, fn()))
        MIGRATIONS.sort()
        return fn
    return register


@migration(1)
def _m1() -> str:
    return """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL, started_at REAL NOT NULL,
        finished_at REAL, input TEXT, output TEXT, tags TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY, run_id TEXT, model TEXT NOT NULL, started_at REAL NOT NULL, latency_s REAL NOT NULL,
        ok INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
        error_type TEXT, retries INTEGER NOT NULL, fallback TEXT, stream INTEGER NOT NULL
    );
    CREATE INDEX calls_run ON calls(run_id);
    CREATE INDEX calls_model_time ON calls(model, started_at);
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY, run_id TEXT, router TEXT NOT NULL, route TEXT, chosen TEXT, confidence REAL NOT NULL,
        outcome TEXT NOT NULL, kind TEXT NOT NULL, stage TEXT, reason TEXT NOT NULL, latency_s REAL NOT NULL,
        at REAL NOT NULL, input TEXT, scores TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX decisions_run ON decisions(run_id);
    CREATE INDEX decisions_router_time ON decisions(router, at);
    """


@migration(2)
def _m2() -> str:
    return """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, at REAL NOT NULL, score REAL, labels TEXT NOT NULL DEFAULT '{}',
        comment TEXT
    );
    CREATE INDEX feedback_run ON feedback(run_id);
    """


@migration(3)
def _m3() -> str:
    return """
    CREATE TABLE experiment_outcomes (
        id INTEGER PRIMARY KEY, experiment TEXT NOT NULL, variant TEXT NOT NULL, unit TEXT, run_id TEXT, at REAL NOT NULL,
        cost_usd REAL NOT NULL, latency_s REAL NOT NULL, error INTEGER NOT NULL, correct INTEGER, score REAL
    );
    CREATE INDEX experiment_outcomes_name ON experiment_outcomes(experiment, variant);
    """


@migration(4)
def _m4() -> str:
    return """
    CREATE TABLE verdicts (
        id INTEGER PRIMARY KEY, run_id TEXT, name TEXT NOT NULL, at REAL NOT NULL, answer TEXT, outcome TEXT NOT NULL,
        agreement REAL NOT NULL, samples_used INTEGER NOT NULL, samples_planned INTEGER NOT NULL, abstained INTEGER NOT NULL,
        counts TEXT NOT NULL DEFAULT '{}', cost_usd REAL NOT NULL
    );
    CREATE INDEX verdicts_name_time ON verdicts(name, at);
    """


@migration(5)
def _m5() -> str:
    return """
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY, run_id TEXT, name TEXT NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL, latency_s REAL NOT NULL,
        status TEXT NOT NULL, cost_usd REAL NOT NULL, detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX steps_run ON steps(run_id);
    CREATE TABLE sections (
        id INTEGER PRIMARY KEY, run_id TEXT, step TEXT NOT NULL, idx INTEGER NOT NULL, title TEXT, status TEXT NOT NULL,
        error TEXT, cost_usd REAL NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX sections_run ON sections(run_id);
    """


@migration(6)
def _m6() -> str:
    return """
    CREATE TABLE batches (
        batch_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, source TEXT NOT NULL, created_at REAL NOT NULL, total INTEGER NOT NULL
    );
    CREATE TABLE batch_items (
        batch_id TEXT NOT NULL, item_key TEXT NOT NULL, line INTEGER NOT NULL, status TEXT NOT NULL, run_id TEXT, output TEXT,
        error TEXT, cost_usd REAL NOT NULL, latency_s REAL NOT NULL, attempts INTEGER NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (batch_id, item_key)
    );
    """


@migration(7)
def _m7() -> str:
    return """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY, run_id TEXT, at REAL NOT NULL, model TEXT NOT NULL, action TEXT NOT NULL, data_classes TEXT NOT NULL,
        digest TEXT NOT NULL, reason TEXT NOT NULL
    );
    CREATE INDEX audit_run ON audit(run_id);
    CREATE INDEX audit_model_time ON audit(model, at)
    """


@migration(8)
def _m8() -> str:
    return """
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE, models TEXT NOT NULL, workflows TEXT NOT NULL,
        rpm REAL, tpm REAL, budget_usd REAL, period TEXT, team TEXT, created_at REAL NOT NULL, revoked_at REAL
    )
    """


@migration(9)
def _m9() -> str:
    # a batch's lease: the one runner (host, pid) working on it now, and when it last said so
    return """
    ALTER TABLE batches ADD COLUMN owner TEXT;
    ALTER TABLE batches ADD COLUMN owner_host TEXT;
    ALTER TABLE batches ADD COLUMN owner_pid INTEGER;
    ALTER TABLE batches ADD COLUMN heartbeat REAL
    """


class StoreError(TurnoutError):
    """The trace store could not write (raised only by a store opened with ``strict=True``)."""


def current_run() -> str | None:
    """The id of the run the current task is inside (``with store.run(...)``), else None."""
    a = _ACTIVE.get()
    return a[1] if a is not None else None


def default_path() -> Path:
    """``TURNOUT_DB`` or ``./.turnout/turnout.db``."""
    return Path(os.environ.get("TURNOUT_DB") or Path(".turnout") / "turnout.db")


class SQLiteStore(SyncTables):
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
    ) -> None:
        self.path = Path(path) if path is not None else default_path()
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
        db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=5.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    # -- schema ------------------------------------------------------------------------------------
    def _migrate(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {v for (v,) in db.execute("SELECT version FROM schema_migrations")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                # re-checked inside the write lock: another process may have just applied it
                if db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone() is None:
                    for statement in sql.split(";"):
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
        if len(self._q) >= self.batch:
            self._kick.set()  # a full batch: the flusher writes now instead of at its next tick

    @contextmanager
    def run(self, workflow: str, input: str | None = None, *, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """``with store.run("triage", text) as run_id:`` — calls and decisions inside are attributed to it."""
        run_id = self.start_run(workflow, input, tags=tags)
        token = _ACTIVE.set((self, run_id))
        t = tags or {}
        status = "ok"
        try:
            with spend_scope(run=run_id, workflow=workflow, key=t.get("key"), team=t.get("team")):
                yield run_id
        except BaseException:
            status = "error"
            raise
        finally:
            _ACTIVE.reset(token)
            self.finish_run(run_id, status=status)

    def _run_id(self) -> str | None:
        a = _ACTIVE.get()
        return a[1] if a is not None and a[0] is self else None

    def start_run(self, workflow: str, input: str | None = None, *, tags: Mapping[str, str] | None = None) -> str:
        run_id = uuid.uuid4().hex
        self._put("run", (run_id, workflow, "running", time.time(), text_or_hash(input, self.redact), json.dumps(dict(tags or {}))))
        return run_id

    def finish_run(self, run_id: str, *, status: str = "ok", output: str | None = None) -> None:
        self._put("finish", (status, time.time(), text_or_hash(output, self.redact), run_id))

    def record(self, event: Any) -> None:
        """Record a ``CallEvent`` (this makes the store a sink for ``Traced``)."""
        u = event.usage
        self._put("call", (self._run_id(), event.model, event.started_at, event.latency_s, int(event.ok), u.input_tokens,
                           u.output_tokens, event.cost_usd, event.error_type, event.retries, event.fallback, int(event.stream)))

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

    def feedback(self, run_id: str | None = None) -> list[dict[str, Any]]:
        db = self._reading()
        q, args = "SELECT run_id, at, score, labels, comment FROM feedback", []
        if run_id is not None:
            q, args = q + " WHERE run_id = ?", [run_id]
        return [{"run_id": r[0], "at": r[1], "score": r[2], "labels": json.loads(r[3]), "comment": r[4]}
                for r in db.execute(q + " ORDER BY id", args)]

    def misroutes(self, *, router: str | None = None) -> list[tuple[DecisionRow, str]]:
        """Decisions whose run's latest feedback names another route: (decision, correct route)."""
        self.flush()
        correct: dict[str, str] = {}
        for fb in self.feedback():
            r = fb["labels"].get("route")
            if r:
                correct[fb["run_id"]] = r  # the latest feedback wins
        out = []
        for d in self.decisions(router=router):
            want = correct.get(d.run_id or "")
            if want is not None and d.route != want:
                out.append((d, want))
        return out

    def labelled_decisions(self, *, router: str | None = None) -> list[tuple[DecisionRow, str]]:
        """Every decision whose run has a route label in its feedback: (decision, correct route)."""
        self.flush()
        correct = {fb["run_id"]: fb["labels"]["route"] for fb in self.feedback() if fb["labels"].get("route")}
        return [(d, correct[d.run_id]) for d in self.decisions(router=router) if d.run_id in correct]

    def record_verdict(self, verdict: Any, *, name: str = "vote", run_id: str | None = None) -> None:
        """A voting ``Verdict``: answer, outcome, agreement, samples used of planned, the tally."""
        v = verdict
        self._put("verdict", (run_id or self._run_id(), name, time.time(), v.answer, v.outcome, v.agreement, v.samples_used,
                              v.samples_planned, v.abstained, json.dumps(dict(v.counts)), v.cost_usd))

    def verdicts(self, *, name: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        db = self._reading()
        cols = ("run_id", "name", "at", "answer", "outcome", "agreement", "samples_used", "samples_planned", "abstained", "counts", "cost_usd")
        q, args = f"SELECT {', '.join(cols)} FROM verdicts WHERE 1=1", []
        if name is not None:
            q += " AND name = ?"
            args.append(name)
        if since is not None:
            q += " AND at >= ?"
            args.append(since)
        out = []
        for r in db.execute(q + " ORDER BY id", args):
            d = dict(zip(cols, r, strict=True))
            d["counts"] = json.loads(d["counts"])
            out.append(d)
        return out

    def record_step(self, name: str, kind: str, *, latency_s: float, status: str = "ok", cost_usd: float = 0.0,
                    detail: Mapping[str, Any] | None = None, run_id: str | None = None) -> None:
        """One workflow step (route, section, vote, chain, call, ...) of a run."""
        self._put("step", (run_id or self._run_id(), name, kind, time.time(), latency_s, status, cost_usd,
                           json.dumps(dict(detail or {}), default=str)))

    def steps(self, *, run_id: str | None = None) -> list[dict[str, Any]]:
        db = self._reading()
        cols = ("run_id", "name", "kind", "at", "latency_s", "status", "cost_usd", "detail")
        q, args = f"SELECT {', '.join(cols)} FROM steps", []
        if run_id is not None:
            q, args = q + " WHERE run_id = ?", [run_id]
        out = []
        for r in db.execute(q + " ORDER BY id", args):
            d = dict(zip(cols, r, strict=True))
            d["detail"] = json.loads(d["detail"])
            out.append(d)
        return out

    def record_sections(self, step: str, envelopes: Sequence[Any], titles: Sequence[str] = (), *, run_id: str | None = None) -> None:
        """The fan-out envelopes of a sectioning step: status, error, cost, tokens, latency per section."""
        rid, now = run_id or self._run_id(), time.time()
        for e in envelopes:
            title = titles[e.index] if e.index < len(titles) else None
            self._put("section", (rid, step, e.index, title, e.status, str(e.error)[:300] if e.error else None, e.cost_usd,
                                  e.input_tokens, e.output_tokens, e.latency_s, now))

    def sections(self, *, run_id: str | None = None, step: str | None = None) -> list[dict[str, Any]]:
        db = self._reading()
        cols = ("run_id", "step", "idx", "title", "status", "error", "cost_usd", "input_tokens", "output_tokens", "latency_s")
        q, args = f"SELECT {', '.join(cols)} FROM sections WHERE 1=1", []
        for col, val in (("run_id", run_id), ("step", step)):
            if val is not None:
                q += f" AND {col} = ?"
                args.append(val)
        return [dict(zip(cols, r, strict=True)) for r in db.execute(q + " ORDER BY id", args)]

    def record_audit(self, rec: Any, *, run_id: str | None = None) -> None:
        """A compliance audit record: which model was sent (or refused) which data classes, and the
        sha256 of the text — never the text."""
        self._put("audit", (run_id or self._run_id(), rec.at or time.time(), rec.model, rec.action, ",".join(rec.data_classes),
                            rec.digest, rec.reason))

    def audit(self, *, run_id: str | None = None, model: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        db = self._reading()
        cols = ("run_id", "at", "model", "action", "data_classes", "digest", "reason")
        q, args = f"SELECT {', '.join(cols)} FROM audit WHERE 1=1", []
        for col, op, val in (("run_id", "=", run_id), ("model", "=", model), ("at", ">=", since)):
            if val is not None:
                q += f" AND {col} {op} ?"
                args.append(val)
        out = []
        for r in db.execute(q + " ORDER BY id", args):
            d = dict(zip(cols, r, strict=True))
            d["data_classes"] = [c for c in d["data_classes"].split(",") if c]
            out.append(d)
        return out

    def spend(self, *, since: float | None = None, model: str | None = None, workflow: str | None = None,
              key: str | None = None, team: str | None = None) -> float:
        """USD recorded for calls since ``since`` (unix time), narrowed to a model, a workflow, or the
        runs tagged with an API key / team (``tags={"key": ..., "team": ...}``)."""
        db = self._reading()
        q, args = "SELECT c.cost_usd, r.tags FROM calls c LEFT JOIN runs r ON r.run_id = c.run_id WHERE 1=1", []
        for col, val in (("c.started_at >=", since), ("c.model =", model), ("r.workflow =", workflow)):
            if val is not None:
                q += f" AND {col} ?"
                args.append(val)
        total = 0.0
        for cost, tags in db.execute(q, args):
            if key is not None or team is not None:
                t = json.loads(tags or "{}")
                if (key is not None and t.get("key") != key) or (team is not None and t.get("team") != team):
                    continue
            total += cost or 0.0
        return total

    def record_outcome(self, experiment: str, variant: str, *, unit: str | None = None, cost_usd: float = 0.0,
                       latency_s: float = 0.0, error: bool = False, correct: bool | None = None, score: float | None = None) -> None:
        """One unit's outcome in an A/B experiment (see ``turnout.store.experiments``)."""
        self._put("outcome", (experiment, variant, unit, self._run_id(), time.time(), cost_usd, latency_s, int(error),
                              None if correct is None else int(correct), score))

    def experiments(self) -> list[str]:
        """The names of the experiments with recorded outcomes."""
        db = self._reading()
        return [r[0] for r in db.execute("SELECT DISTINCT experiment FROM experiment_outcomes ORDER BY experiment")]

    def outcomes(self, experiment: str) -> list[dict[str, Any]]:
        db = self._reading()
        cols = ("variant", "unit", "run_id", "at", "cost_usd", "latency_s", "error", "correct", "score")
        return [dict(zip(cols, r, strict=True)) for r in db.execute(
            f"SELECT {', '.join(cols)} FROM experiment_outcomes WHERE experiment = ? ORDER BY id", (experiment,))]

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

    def run_detail(self, run_id: str) -> dict[str, Any] | None:
        """One run with its steps, decisions, calls, verdicts and audit rows (the gateway's GET /v1/runs/{id})."""
        runs = [r for r in self.runs(limit=None) if r.run_id == run_id]
        if not runs:
            return None
        from dataclasses import asdict

        return {
            "run": asdict(runs[0]), "steps": self.steps(run_id=run_id),
            "decisions": [asdict(d) for d in self.decisions(run_id=run_id)],
            "calls": [asdict(c) for c in self.calls(run_id=run_id)],
            "verdicts": [v for v in self.verdicts() if v["run_id"] == run_id],
            "audit": self.audit(run_id=run_id), "feedback": self.feedback(run_id),
        }

    # -- the flusher -----------------------------------------------------------------------------------
    _SQL = {
        "run": "INSERT INTO runs (run_id, workflow, status, started_at, input, tags) VALUES (?, ?, ?, ?, ?, ?)",
        "finish": "UPDATE runs SET status = ?, finished_at = ?, output = COALESCE(?, output) WHERE run_id = ?",
        "call": "INSERT INTO calls (run_id, model, started_at, latency_s, ok, input_tokens, output_tokens, cost_usd, error_type, "
                "retries, fallback, stream) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # consecutive rows of one kind go in one executemany (order across kinds is kept)
            for kind, group in itertools.groupby(items, key=lambda it: it[0]):
                self._db.executemany(self._SQL[kind], [row for _, row in group])
            self._db.execute("COMMIT")
        except BaseException:
            try:
                self._db.execute("ROLLBACK")
            except self._db_errors:
                pass
            raise

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

    # -- reading ------------------------------------------------------------------------------------
    def runs(self, *, limit: int | None = 100, since: float | None = None, workflow: str | None = None) -> Sequence[RunRow]:
        """Newest first, with cost and tokens summed over the run's calls."""
        db = self._reading()
        out = []
        where, args = "WHERE 1=1", []
        if since is not None:
            where += " AND r.started_at >= ?"
            args.append(since)
        if workflow is not None:
            where += " AND r.workflow = ?"
            args.append(workflow)
        args.append(limit if limit is not None else 2**62)
        for r in db.execute(
            "SELECT r.run_id, r.workflow, r.status, r.started_at, r.input, r.output, r.tags, r.finished_at, "
            "COALESCE(SUM(c.cost_usd), 0), COALESCE(SUM(c.input_tokens), 0), COALESCE(SUM(c.output_tokens), 0) "
            f"FROM runs r LEFT JOIN calls c ON c.run_id = r.run_id {where} GROUP BY r.run_id ORDER BY r.started_at DESC LIMIT ?", args
        ):
            latency = (r[7] - r[3]) if r[7] else 0.0
            out.append(RunRow(r[0], r[1], r[2], r[3], r[4], r[5], r[8], r[9], r[10], latency, json.loads(r[6])))
        return out

    def calls(self, *, run_id: str | None = None, model: str | None = None, since: float | None = None) -> Sequence[CallRow]:
        db = self._reading()
        q, args = "SELECT run_id, model, started_at, latency_s, ok, input_tokens, output_tokens, cost_usd, error_type, retries, " \
                  "fallback, stream FROM calls WHERE 1=1", []
        for col, val in (("run_id", run_id), ("model", model)):
            if val is not None:
                q += f" AND {col} = ?"
                args.append(val)
        if since is not None:
            q += " AND started_at >= ?"
            args.append(since)
        return [CallRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]))
                for r in db.execute(q + " ORDER BY id", args)]

    def decisions(self, *, run_id: str | None = None, router: str | None = None, since: float | None = None) -> Sequence[DecisionRow]:
        db = self._reading()
        q, args = "SELECT run_id, router, route, chosen, confidence, outcome, kind, stage, reason, latency_s, at, input, scores " \
                  "FROM decisions WHERE 1=1", []
        for col, val in (("run_id", run_id), ("router", router)):
            if val is not None:
                q += f" AND {col} = ?"
                args.append(val)
        if since is not None:
            q += " AND at >= ?"
            args.append(since)
        return [DecisionRow(*r[:12], json.loads(r[12])) for r in db.execute(q + " ORDER BY id", args)]
