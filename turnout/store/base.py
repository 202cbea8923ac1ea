"""The trace store interface: runs, model calls and routing decisions, queryable afterwards.

Writes go through ``record_*`` methods that only enqueue (the hot path is a list append); a
background flusher writes in batches. A store that cannot write (locked, read-only, full disk)
reports the failure once, clearly, and keeps the run going — unless it was opened ``strict``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .._scope import active_run as active_run

__all__ = ["BatchLedger", "CallRow", "DecisionRow", "EscalationQueue", "FeedbackStore", "KeyTable", "RunReader", "RunRow", "Store", "Tee", "TraceStore",
           "active_run", "text_or_hash"]

# ``active_run()``: (store, run_id) of the run the current task is in, from the one run scope
# (``turnout._scope``). Everything that runs inside — model calls through ``Traced``, router
# decisions, votes, sections, workflow steps — records itself into that store without being handed it.


def text_or_hash(text: str | None, redact: bool) -> str | None:
    """The text itself, or (redaction on) ``sha256:<hex>`` of it."""
    if text is None:
        return None
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest() if redact else text


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    workflow: str
    status: str
    started_at: float
    input: str | None = None
    output: str | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallRow:
    run_id: str | None
    model: str
    started_at: float
    latency_s: float
    ok: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error_type: str | None = None
    retries: int = 0
    fallback: str | None = None
    stream: bool = False
    tools: tuple[str, ...] = ()  # the tools the answer called (names)
    cached: bool = False  # answered from the response cache (cost 0)
    saved_usd: float = 0.0  # what the cached answer cost when it was made


@dataclass(frozen=True, slots=True)
class DecisionRow:
    run_id: str | None
    router: str
    route: str | None
    chosen: str | None
    confidence: float
    outcome: str
    kind: str
    stage: str | None
    reason: str
    latency_s: float
    at: float
    input: str | None = None
    scores: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class TraceStore(Protocol):
    def start_run(self, workflow: str, input: str | None = None, *, tags: Mapping[str, str] | None = None) -> str: ...

    def finish_run(self, run_id: str, *, status: str = "ok", output: str | None = None) -> None: ...

    def run(self, workflow: str, input: str | None = None, *, tags: Mapping[str, str] | None = None) -> AbstractContextManager[str]:
        """``with store.run("triage", text) as run_id:`` — a run in this store, in scope (``open_run``)."""
        ...

    def record(self, event: Any) -> None:
        """A policies.trace.CallEvent (so a store is a sink for ``Traced``)."""
        ...

    def record_decision(self, decision: Any, *, router: str = "", input: str | None = None, run_id: str | None = None) -> None: ...

    def record_verdict(self, verdict: Any, *, name: str = "vote", run_id: str | None = None) -> None: ...

    def record_audit(self, rec: Any, *, run_id: str | None = None) -> None:
        """One compliance audit record (what was sent, redacted or refused, by sha256)."""
        ...

    def record_sections(self, step: str, envelopes: Sequence[Any], titles: Sequence[str] = (), *, run_id: str | None = None) -> None: ...

    def record_step(self, name: str, kind: str, *, latency_s: float, status: str = "ok", cost_usd: float = 0.0,
                    detail: Mapping[str, Any] | None = None, run_id: str | None = None) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def runs(self, *, limit: int | None = 100, since: float | None = None, workflow: str | None = None) -> Sequence[RunRow]: ...

    def calls(self, *, run_id: str | None = None, model: str | None = None, since: float | None = None) -> Sequence[CallRow]: ...

    def decisions(self, *, run_id: str | None = None, router: str | None = None, since: float | None = None) -> Sequence[DecisionRow]: ...


# The store's tables by concern, each behind its own narrow protocol (SQLiteStore and PostgresStore
# implement all of them; a caller types its store by the one it uses).
@runtime_checkable
class BatchLedger(Protocol):
    """The batch ledger and its lease (``turnout batch``, local and Ray), written at once, not queued."""

    def ledger_open(self, batch_id: str, *, workflow: str, source: str, total: int) -> dict[str, dict[str, Any]]: ...

    def ledger_record(self, batch_id: str, key: str, *, line: int, status: str, run_id: str | None = None, output: str | None = None,
                      error: str | None = None, cost_usd: float = 0.0, latency_s: float = 0.0) -> None: ...

    def ledger_items(self, batch_id: str) -> list[dict[str, Any]]: ...

    def lease_take(self, batch_id: str, owner: str, *, host: str, pid: int, stale_s: float,
                   dead_owner: str | None = None) -> dict[str, Any] | None: ...

    def lease_beat(self, batch_id: str, owner: str) -> None: ...

    def lease_release(self, batch_id: str, owner: str) -> None: ...


@runtime_checkable
class KeyTable(Protocol):
    """The gateway's API keys (hashed), written at once."""

    def key_insert(self, row: Mapping[str, Any]) -> None: ...

    def key_by_hash(self, digest: str) -> dict[str, Any] | None: ...

    def api_keys(self) -> list[dict[str, Any]]: ...

    def key_revoke(self, key_id_or_name: str) -> bool: ...


@runtime_checkable
class FeedbackStore(Protocol):
    """Feedback on runs and A/B experiment outcomes, and the reads that learn from them."""

    def add_feedback(self, run_id: str, *, score: float | None = None, labels: Mapping[str, str] | None = None,
                     comment: str | None = None) -> None: ...

    def feedback(self, run_id: str | None = None) -> list[dict[str, Any]]: ...

    def misroutes(self, *, router: str | None = None) -> list[tuple[DecisionRow, str]]: ...

    def labelled_decisions(self, *, router: str | None = None) -> list[tuple[DecisionRow, str]]: ...

    def record_outcome(self, experiment: str, variant: str, *, unit: str | None = None, cost_usd: float = 0.0,
                       latency_s: float = 0.0, error: bool = False, correct: bool | None = None, score: float | None = None) -> None: ...

    def experiments(self) -> list[str]: ...

    def outcomes(self, experiment: str) -> list[dict[str, Any]]: ...


@runtime_checkable
class EscalationQueue(Protocol):
    """The escalation queue, the runs waiting on it and routers' refits (``_queue.py``), written at once."""

    def queue_suspend(self, item: Mapping[str, Any], state: Mapping[str, Any]) -> str: ...

    def reopen_run(self, run_id: str) -> None: ...

    def queue_items(self, *, queue: str | None = None, status: str | None = None, team: str | None = None, run_id: str | None = None,
                    any_team: bool = True, limit: int = 200) -> list[dict[str, Any]]: ...

    def queue_item(self, item_id: str) -> dict[str, Any] | None: ...

    def queue_claim(self, item_id: str, who: str, *, ttl_s: float = 900.0) -> dict[str, Any]: ...

    def queue_resolve(self, item_id: str, who: str, resolution: Mapping[str, Any]) -> dict[str, Any]: ...

    def suspended(self, run_id: str) -> dict[str, Any] | None: ...

    def resume_take(self, run_id: str, *, lease_s: float = 3600.0) -> bool: ...

    def resume_release(self, run_id: str) -> None: ...

    def resume_done(self, run_id: str, item_id: str) -> None: ...

    def record_fit(self, router: str, *, source: str, examples: int, detail: Mapping[str, Any] | None = None) -> None: ...

    def fits(self, router: str | None = None) -> list[dict[str, Any]]: ...


@runtime_checkable
class RunReader(Protocol):
    """What reports, the dashboard and ``GET /v1/runs/{id}`` read; every read off the event loop."""

    def verdicts(self, *, name: str | None = None, since: float | None = None, run_id: str | None = None) -> list[dict[str, Any]]: ...

    def steps(self, *, run_id: str | None = None) -> list[dict[str, Any]]: ...

    def sections(self, *, run_id: str | None = None, step: str | None = None) -> list[dict[str, Any]]: ...

    def audit(self, *, run_id: str | None = None, model: str | None = None, since: float | None = None) -> list[dict[str, Any]]: ...

    def spend(self, *, since: float | None = None, model: str | None = None, workflow: str | None = None,
              key: str | None = None, team: str | None = None) -> float: ...

    def run_detail(self, run_id: str) -> dict[str, Any] | None: ...

    # the dashboard at scale: hourly rollups and indexed reads (store/_rollups.py)
    def model_summary(self, since: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[float, float, float]]]: ...

    def route_summary(self, since: float | None = None) -> tuple[list[dict[str, Any]], list[int], int]: ...

    def low_confidence(self, since: float | None = None, *, below: float = 0.5, limit: int = 30) -> list[Any]: ...

    def vote_summary(self, since: float | None = None) -> tuple[list[dict[str, Any]], list[int]]: ...

    def count_runs(self, since: float | None = None) -> int: ...

    def search_runs(self, q: str = "", *, workflow: str | None = None, status: str | None = None, since: float | None = None,
                    before: float | None = None, limit: int = 50, scan: int = 5000) -> Sequence[RunRow]: ...


@runtime_checkable
class Store(TraceStore, BatchLedger, KeyTable, FeedbackStore, EscalationQueue, RunReader, Protocol):
    """A whole store (what ``open_store`` returns): for a caller that uses several of its concerns —
    the gateway, the dashboard, a batch (runs and its ledger). ``path`` is what messages name it by
    (a file, or a URL without its password)."""

    @property
    def path(self) -> Any: ...


class Tee:
    """Send every event to several sinks (e.g. a SQLiteStore and Metrics)."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def record(self, event: Any) -> None:
        for s in self.sinks:
            s.record(event)

    def _forward(self, method: str, *args: Any, **kw: Any) -> None:
        for s in self.sinks:
            f = getattr(s, method, None)
            if f is not None:
                f(*args, **kw)

    def record_decision(self, decision: Any, **kw: Any) -> None:
        self._forward("record_decision", decision, **kw)

    def record_verdict(self, verdict: Any, **kw: Any) -> None:
        self._forward("record_verdict", verdict, **kw)

    def record_sections(self, step: str, envelopes: Sequence[Any], titles: Sequence[str] = (), **kw: Any) -> None:
        self._forward("record_sections", step, envelopes, titles, **kw)

    def record_step(self, name: str, kind: str, **kw: Any) -> None:
        self._forward("record_step", name, kind, **kw)


