"""Resumable batch runs: every input line through a workflow, ``concurrency`` at a time, each item's
state in the store's ledger (committed as it changes). After Ctrl-C or kill -9, the same command
finds the ledger and runs only what is not done — finished items are never run (or billed) again.
One runner works on a batch at a time (``BatchLease``): a second copy of the same command refuses
while the first is alive, and takes over at once when the first is gone (its process dead on this
host, or silent for ``stale_s`` seconds on another).

An input file is JSON Lines: each line a JSON string (the input text) or an object (its fields are
the input; ``id`` is the item's key, else a hash of the line). Lines that are not JSON are reported
with their numbers and skipped (``strict`` refuses the whole file before anything runs).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._secrets import clean
from .._yaml import decode_utf8, json_line
from ..store.base import BatchLedger, Store
from .context import as_text
from .runner import Workflow

__all__ = ["BatchBusy", "BatchItem", "BatchLease", "BatchSummary", "batch_id_for", "pending", "read_items", "run_batch", "run_item", "write_output"]


@dataclass(frozen=True, slots=True)
class BatchItem:
    key: str
    line: int
    input: Any


@dataclass
class BatchSummary:
    batch_id: str
    total: int
    done: int = 0
    errors: int = 0
    skipped_done: int = 0  # finished in an earlier attempt: not run again
    ran: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    interrupted: bool = False

    def count(self, ok: bool, cost_usd: float, t0: float) -> None:
        """One item finished in this attempt."""
        self.ran += 1
        self.cost_usd += cost_usd
        if ok:
            self.done += 1
        else:
            self.errors += 1
        self.elapsed_s = time.perf_counter() - t0

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.errors


def read_items(path: str | Path) -> tuple[list[BatchItem], list[tuple[int, str]]]:
    """(items, invalid lines as (line number, why)). Blank lines are ignored."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the input file: {e.strerror}") from None
    items: list[BatchItem] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for n, raw_bytes in enumerate(data.splitlines(), 1):
        try:  # a line that is not UTF-8, not JSON or nested too deeply is skipped alone
            raw = decode_utf8(raw_bytes, p, first_line=n)
        except ConfigError as e:
            bad.append((n, str(e).split(": ", 1)[-1]))
            continue
        if not raw.strip():
            continue
        try:
            doc = json_line(raw)
        except json.JSONDecodeError as e:
            bad.append((n, f"not JSON: {e.msg} at column {e.colno}"))
            continue
        except ValueError as e:
            bad.append((n, f"not accepted: {e}"))
            continue
        if isinstance(doc, dict):
            if "id" in doc and not isinstance(doc["id"], (str, int)):
                bad.append((n, "'id' must be a string or an integer"))
                continue
            key = str(doc["id"]) if "id" in doc else None
            value: Any = doc["input"] if "input" in doc and len(doc) <= 2 and set(doc) <= {"id", "input"} else doc
        elif isinstance(doc, str):
            key, value = None, doc
        else:
            bad.append((n, f"a line is a JSON string or object, not {type(doc).__name__}"))
            continue
        if key is None:
            key = "sha:" + hashlib.sha256(raw.strip().encode()).hexdigest()[:16]
        if key in seen:
            if "id" in (doc if isinstance(doc, dict) else {}):
                bad.append((n, f"duplicate id {key!r} (first on line {seen[key]})"))
                continue
            k = 2
            while f"{key}#{k}" in seen:
                k += 1
            key = f"{key}#{k}"  # the same line twice: two items
        seen[key] = n
        items.append(BatchItem(key, n, value))
    return items, bad


def batch_id_for(workflow_path: str | Path, input_path: str | Path) -> str:
    """The same workflow file (content) over the same input file (path) is the same batch."""
    h = hashlib.sha256()
    h.update(Path(workflow_path).read_bytes())
    h.update(b"\0" + str(Path(input_path).resolve()).encode())
    return h.hexdigest()[:20]


def pending(batch_id: str, items: list[BatchItem], known: dict[str, dict[str, Any]], *,
            retry_errors: bool = True) -> tuple[BatchSummary, list[BatchItem]]:
    """A summary counting what the ledger already has, and the items still to run."""
    summary = BatchSummary(batch_id, len(items))
    todo: list[BatchItem] = []
    for it in items:
        st = known.get(it.key, {}).get("status")
        if st == "done" or (st == "error" and not retry_errors):
            summary.skipped_done += 1
            summary.done += st == "done"
            summary.errors += st == "error"
            summary.cost_usd += known[it.key]["cost_usd"]
        else:
            todo.append(it)
    return summary, todo


class BatchBusy(ConfigError):
    """Another live runner holds the batch (exit 2: nothing was run or billed)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class BatchLease:
    """The right to run a batch's items, held in the store (``batches.owner``) with a heartbeat.

    ``acquire()`` takes it or raises ``BatchBusy`` naming the live holder; a holder whose process is
    dead on this host is replaced at once, one on another host once it has been silent ``stale_s``
    seconds. While held, a daemon thread refreshes the heartbeat every ``beat_s`` seconds."""

    def __init__(self, store: BatchLedger, batch_id: str, *, stale_s: float = 30.0, beat_s: float = 5.0) -> None:
        self.store, self.batch_id, self.stale_s, self.beat_s = store, batch_id, stale_s, beat_s
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        kw = {"host": self.host, "pid": self.pid, "stale_s": self.stale_s}
        holder = self.store.lease_take(self.batch_id, self.owner, **kw)
        if holder is not None and holder["owner_host"] == self.host and not _alive(int(holder["owner_pid"] or 0)):
            holder = self.store.lease_take(self.batch_id, self.owner, dead_owner=holder["owner"], **kw)  # its runner is gone
        if holder is not None:
            ago = max(0.0, time.time() - float(holder["heartbeat"] or 0.0))
            raise BatchBusy(f"batch {self.batch_id} is already being run by process {holder['owner_pid']} on "
                            f"{holder['owner_host']} (last heard from {ago:.0f} s ago): wait for it to finish or stop it — "
                            "running the same command again then resumes where it stopped")
        self._thread = threading.Thread(target=self._beat, name=f"turnout-lease-{self.batch_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self.store.lease_beat(self.batch_id, self.owner)
            except Exception:  # noqa: BLE001 - an unreachable store: the next beat tries again
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.store.lease_release(self.batch_id, self.owner)
        except Exception:  # noqa: BLE001 - unreachable: the lease goes stale, or the next run sees this pid is gone
            pass


async def run_item(wf: Workflow, store: Store, batch_id: str, it: BatchItem, *, deadline: float | None = None) -> Any:
    """One item: ``running`` in the ledger, the workflow run (traced), then ``done`` or ``error``.
    The ledger is written at once (committed before the item goes on), in a thread: never on the loop.
    ``deadline`` (seconds) bounds the item's run like ``Workflow.run(deadline=)``: past it, the item is
    an ``error`` (deadline_exceeded) and the batch goes on."""
    await asyncio.to_thread(store.ledger_record, batch_id, it.key, line=it.line, status="running")
    res = await wf.run(it.input, store=store, tags={"batch": batch_id, "item": it.key}, deadline=deadline)
    ok = res.status != "error"
    out = res.output if isinstance(res.output, (str, int, float, bool, list, dict)) or res.output is None else as_text(res.output)
    await asyncio.to_thread(store.ledger_record, batch_id, it.key, line=it.line, status="done" if ok else "error",
                            run_id=res.run_id, output=json.dumps({"output": out, "status": res.status, "routes": res.summary()["routes"]}),
                            error=res.error,
                            cost_usd=res.cost_usd, latency_s=res.latency_s)
    return res


async def run_batch(
    wf: Workflow,
    items: list[BatchItem],
    *,
    store: Store,
    batch_id: str,
    source: str = "",
    concurrency: int = 4,
    on_item: Callable[[BatchSummary, BatchItem, Any], None] | None = None,
    retry_errors: bool = True,
    deadline: float | None = None,
) -> BatchSummary:
    """Run the items not yet done; ``on_item(summary, item, result)`` after each (for progress);
    ``deadline`` (seconds) bounds each item's run."""
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if deadline is not None and deadline <= 0:
        raise ConfigError("--deadline must be a positive number of seconds")
    await asyncio.to_thread(store.ledger_open, batch_id, workflow=wf.name, source=source, total=len(items))
    lease = BatchLease(store, batch_id)
    await asyncio.to_thread(lease.acquire)  # BatchBusy while another runner works on this batch
    try:
        return await _run_leased(wf, items, store, batch_id, concurrency, on_item, retry_errors, deadline)
    finally:
        await asyncio.shield(asyncio.to_thread(lease.release))


async def _run_leased(wf: Workflow, items: list[BatchItem], store: Store, batch_id: str, concurrency: int,
                      on_item: Callable[[BatchSummary, BatchItem, Any], None] | None, retry_errors: bool,
                      deadline: float | None) -> BatchSummary:
    known = {r["item_key"]: r for r in await asyncio.to_thread(store.ledger_items, batch_id)}  # read under the lease
    summary, todo = pending(batch_id, items, known, retry_errors=retry_errors)
    t0 = time.perf_counter()
    queue: asyncio.Queue[BatchItem] = asyncio.Queue()
    for it in todo:
        queue.put_nowait(it)

    async def worker() -> None:
        while True:
            try:
                it = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            res = await run_item(wf, store, batch_id, it, deadline=deadline)
            summary.count(res.status != "error", res.cost_usd, t0)
            if on_item is not None:
                on_item(summary, it, res)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(concurrency, len(todo)) or 0):
                tg.create_task(worker())
    except asyncio.CancelledError:
        summary.interrupted = True
        raise
    finally:
        summary.elapsed_s = time.perf_counter() - t0
    return summary


def write_output(store: BatchLedger, batch_id: str, items: list[BatchItem], path: str | Path) -> int:
    """Write every finished item, in input order, to ``path`` (atomically). Returns the count."""
    by_key = {r["item_key"]: r for r in store.ledger_items(batch_id)}
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for it in items:
                r = by_key.get(it.key)
                if r is None or r["status"] not in ("done", "error"):
                    continue
                body = json.loads(r["output"]) if r["output"] else {"output": None, "status": r["status"]}
                row = {"id": it.key, "line": it.line, "status": body.get("status", r["status"]), "output": body.get("output"),
                       "routes": body.get("routes", []), "run_id": r["run_id"], "cost_usd": round(r["cost_usd"], 8)}
                if r["error"]:
                    row["error"] = r["error"]
                f.write(clean(json.dumps(row, ensure_ascii=False)) + "\n")  # always encodable; never a secret
                n += 1
        os.replace(tmp, p)
    except OSError as e:
        raise ConfigError(f"{p}: cannot write the output: {e.strerror}") from None
    return n
