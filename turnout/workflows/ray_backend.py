"""Run a batch on a Ray cluster (``turnout batch ... --backend ray``; ``pip install 'turnout[ray]'``).

The same semantics as the local runner (``run_batch``), spread over Ray actors:

- ``workers`` actors (each holding the workflow, its models and a store connection) run the items,
  ``per_worker`` at a time; the driver hands out items and collects results, so the progress bar
  and the summary live on the driver.
- Limits and budgets are cluster-wide: one gate actor holds the balances of the catalog's budgets
  (``budgets:``, the ``Accounts`` of every worker's ``SpendControl``), the token buckets of its
  rate limits (``policies.rate_limit``, the ``Buckets`` of every ``RateLimiter``) and per model a
  concurrency cap (``policies.max_concurrency``). Every model call on every worker reserves and
  settles there through the same ``Budgeted`` and ``Limited`` layers as a local run, so 30 workers
  on 3 nodes still make at most N concurrent calls to a model and never pass a budget.
- The ledger and traces go to the shared store: a PostgreSQL URL for a multi-node cluster (every
  node must reach it), or a SQLite file for a single-node Ray (the workers are on the same disk).
- A worker that dies (node lost, OOM, ``ray.kill``) is replaced and its in-flight items are run
  again on another worker; an item is marked done in the ledger once, the output has each item
  once, and only the calls that were in flight when the worker died can be paid twice (as with
  kill -9 on the local runner). If the driver dies, the same command resumes from the ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError, TurnoutError
from .._types import Completion, Price, Request, StreamChunk
from .batch import BatchItem, BatchLease, BatchSummary, pending

if TYPE_CHECKING:
    from ..store.base import Store

__all__ = ["run_batch_ray"]


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'turnout[ray]'") from None
    return ray


class _GateState:
    """The gate actor of a batch: the balances of the catalog's budgets (``RayAccounts``) and the
    token buckets of its rate limits (``RayBuckets``) that every worker charges, and per model a
    concurrency cap (``Gated``). Each reservation and slot is held for its worker, so a worker that
    dies gives them back at once (``release_owner``)."""

    def __init__(self, caps: dict[str, int]) -> None:
        from ..policies.ledger import MemoryAccounts
        from ..policies.ratelimit import MemoryBuckets

        self.accounts, self.buckets = MemoryAccounts(), MemoryBuckets()
        self.sems = {m: asyncio.Semaphore(n) for m, n in caps.items()}
        self.holds: dict[int, tuple[str, str, Any]] = {}  # id -> (owner, "slot" | "account", model | account token)
        self.next = 0
        self.active: dict[str, int] = {}
        self.max_active: dict[str, int] = {}
        self.dead: set[str] = set()

    def _hold(self, owner: str, kind: str, what: Any) -> int:
        self.next += 1
        self.holds[self.next] = (owner, kind, what)
        return self.next

    # -- the Accounts of RayAccounts --------------------------------------------------------------
    def take(self, owner: str, account: str, amount: float, limit: float, seed: float) -> tuple[int | None, float, float]:
        token, spent, reserved = self.accounts.take_now(account, amount, limit, seed)
        return (self._hold(owner, "account", token) if token is not None else None), spent, reserved

    def give(self, hold_id: int, actual: float | None) -> tuple[float, float, int]:
        entry = self.holds.pop(hold_id, None)
        if entry is None:  # given back already, when its worker was declared dead
            return 0.0, 0.0, 0
        return self.accounts.give_now(entry[2], actual)

    def exists(self, account: str) -> bool:
        return self.accounts.exists_now(account)

    def balance(self, account: str) -> tuple[float, float, int]:
        return self.accounts.balance_now(account)

    # -- the Buckets of RayBuckets ------------------------------------------------------------------
    def take_tokens(self, bucket: str, n: float, rate: float, capacity: float, now: float, wait: bool) -> float:
        return self.buckets.take_now(bucket, n, rate, capacity, now, wait)

    def give_tokens(self, bucket: str, n: float, rate: float, capacity: float, now: float) -> None:
        self.buckets.give_now(bucket, n, rate, capacity, now)

    # -- concurrency slots (Gated) ------------------------------------------------------------------
    async def acquire(self, model: str, owner: str = "") -> int:
        sem = self.sems[model]
        await sem.acquire()
        if owner in self.dead:  # its worker died while this call waited: nobody will ever release it
            sem.release()
            raise RuntimeError(f"worker {owner} is gone")
        self.active[model] = self.active.get(model, 0) + 1
        self.max_active[model] = max(self.max_active.get(model, 0), self.active[model])
        return self._hold(owner, "slot", model)

    def release(self, hold_id: int) -> None:
        entry = self.holds.pop(hold_id, None)
        if entry is None:
            return  # already released (by release_owner after its worker died)
        model = entry[2]
        self.active[model] -= 1
        self.sems[model].release()

    def release_owner(self, owner: str) -> int:
        """A worker died: free every slot and reservation it held (its calls will never settle), and
        refuse the calls of it that are still waiting for a slot."""
        self.dead.add(owner)
        ids = [h for h, (o, _, _) in self.holds.items() if o == owner]
        for h in ids:
            if self.holds[h][1] == "slot":
                self.release(h)
            else:
                self.give(h, None)
        return len(ids)

    def stats(self) -> dict[str, Any]:
        spent: dict[str, float] = {}
        for acc in self.accounts.accounts():  # "budget:LABEL|member|start" (policies.spend)
            label = acc.removeprefix("budget:").split("|")[0]
            spent[label] = spent.get(label, 0.0) + self.accounts.balance_now(acc)[0]
        return {"max_active": dict(self.max_active), "spent": spent}


class RayAccounts:
    """The ``Accounts`` of a Ray batch: balances in the gate actor, held for this worker."""

    def __init__(self, gate: Any, owner: str) -> None:
        self.gate, self.owner = gate, owner

    async def take(self, account: str, amount: float, limit: float, *, seed: float = 0.0,
                   ttl: float = 0.0) -> tuple[Any, float, float]:
        return await self.gate.take.remote(self.owner, account, amount, limit, seed)  # type: ignore[no-any-return]

    async def give(self, token: Any, actual: float | None) -> tuple[float, float, int]:
        return await self.gate.give.remote(token, actual)  # type: ignore[no-any-return]

    async def exists(self, account: str) -> bool:
        return await self.gate.exists.remote(account)  # type: ignore[no-any-return]

    async def balance(self, account: str) -> tuple[float, float, int]:
        return await self.gate.balance.remote(account)  # type: ignore[no-any-return]


class RayBuckets:
    """The ``Buckets`` of a Ray batch: token buckets in the gate actor (the workers' wall clocks)."""

    def __init__(self, gate: Any) -> None:
        self.gate = gate

    async def take(self, bucket: str, n: float, rate: float, capacity: float, now: float, *, wait: bool) -> float:
        return await self.gate.take_tokens.remote(bucket, n, rate, capacity, now, wait)  # type: ignore[no-any-return]

    async def give(self, bucket: str, n: float, rate: float, capacity: float, now: float) -> None:
        await self.gate.give_tokens.remote(bucket, n, rate, capacity, now)


class Gated:
    """A model whose calls hold one of its cluster-wide concurrency slots in the gate actor."""

    def __init__(self, inner: Any, gate: Any, name: str, owner: str = "") -> None:
        self.inner, self.gate, self._name, self.owner = inner, gate, name, owner

    @property
    def name(self) -> str:
        return self._name

    @property
    def price(self) -> Price:
        return self.inner.price  # type: ignore[no-any-return]

    async def complete(self, request: Request) -> Completion:
        try:
            hold = await self.gate.acquire.remote(self._name, self.owner)
        except Exception as e:  # noqa: BLE001 - Ray wraps what the gate raised (RayTaskError): the caller sees it as itself
            cause = getattr(e, "cause", None)
            if isinstance(cause, TurnoutError):
                raise cause from None
            raise
        try:
            return await self.inner.complete(request)  # type: ignore[no-any-return]
        finally:
            await self.gate.release.remote(hold)

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        c = await self.complete(request)
        yield StreamChunk(c.text, model=c.model)
        yield StreamChunk("", True, c.finish_reason, c.usage, c.cost_usd, c.latency_s, c.model)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Worker:
    """One Ray actor: the workflow (loaded once), its models behind the gate, a store connection."""

    def __init__(self, wf_path: str, catalog_path: str | None, store_target: str, gate: Any, batch_id: str,
                 deadline: float | None = None) -> None:
        import uuid

        from ..policies.catalog import Catalog
        from ..store import open_store
        from ..store.otel import setup
        from .runner import Workflow

        setup()  # spans by the worker's OTEL_* variables (Ray passes the driver's environment to local workers)
        self.owner = uuid.uuid4().hex
        cat = Catalog.load(catalog_path) if catalog_path else Catalog()
        shared = (RayAccounts(gate, self.owner), RayBuckets(gate))  # budgets and rates: one balance for the cluster
        cat.share(*shared)
        # a capped model holds a cluster-wide slot around its whole stack; the gate inside the trace:
        # the workflow traces the Gated model, so each call is recorded once
        models = {n: Gated(cat.model(n, trace=False), gate, n, self.owner) for n in cat.names() if cat.spec(n).policies.max_concurrency}
        self.wf = Workflow.load(wf_path, catalog=cat, models=models)
        own = getattr(self.wf, "catalog", None)
        if own is not None and own is not cat:  # a workflow with its own models: or catalog:
            own.share(*shared)
        self.store = open_store(store_target)
        self.batch_id, self.deadline = batch_id, deadline

    async def run(self, key: str, line: int, value: Any) -> dict[str, Any]:
        from .batch import run_item

        res = await run_item(self.wf, self.store, self.batch_id, BatchItem(key, line, value), deadline=self.deadline)
        return {"key": key, "ok": res.status != "error", "cost_usd": res.cost_usd, "status": res.status, "error": res.error}

    def ready(self) -> str:
        return self.owner  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Flush the queued trace rows and spans and close the models (before the driver ends the
        actor, whose ``atexit`` hooks may never run)."""
        import asyncio

        from .. import _telemetry

        await self.wf.aclose()
        self.store.close()
        await asyncio.to_thread(_telemetry.flush)


def run_batch_ray(
    wf_path: str | Path,
    items: list[BatchItem],
    *,
    store: Store,
    store_target: str,
    batch_id: str,
    source: str = "",
    catalog_path: str | Path | None = None,
    workers: int = 2,
    per_worker: int = 4,
    address: str | None = None,
    on_item: Callable[[BatchSummary, BatchItem, Any], None] | None = None,
    on_started: Callable[[list[Any]], None] | None = None,
    retry_errors: bool = True,
    max_attempts: int = 3,
    stall_timeout: float | None = 900.0,
    deadline: float | None = None,
) -> tuple[BatchSummary, dict[str, Any]]:
    """Run the items not yet done on Ray. Returns the summary and stats: max concurrent calls per
    model, spend, and ``startup_s`` (starting the worker actors: each imports turnout and loads the
    workflow). ``deadline`` (seconds) bounds each item's run, as with the local backend.
    ``on_started(actors)`` is for tests (e.g. to kill one)."""
    ray = _ray()
    from ..policies.catalog import Catalog

    if workers < 1 or per_worker < 1:
        raise ConfigError("--workers and --concurrency must be at least 1")
    if deadline is not None and deadline <= 0:
        raise ConfigError("--deadline must be a positive number of seconds")
    wf_path, catalog = str(Path(wf_path).resolve()), str(Path(catalog_path).resolve()) if catalog_path else None
    cat = Catalog.load(catalog) if catalog else Catalog()
    caps = {s.name: s.policies.max_concurrency for s in cat.specs() if s.policies.max_concurrency}
    if str(store_target).endswith(".db") or "://" not in str(store_target):
        store_target = str(Path(store_target).resolve())
    from .spec import load_workflow_spec

    store.ledger_open(batch_id, workflow=load_workflow_spec(wf_path)[0].name, source=source, total=len(items))
    lease = BatchLease(store, batch_id)
    lease.acquire()  # BatchBusy while another runner works on this batch
    try:
        return _run_leased(ray, wf_path, catalog, caps, store_target, items, store=store, batch_id=batch_id, workers=workers,
                           per_worker=per_worker, address=address, on_item=on_item, on_started=on_started,
                           retry_errors=retry_errors, max_attempts=max_attempts, stall_timeout=stall_timeout, deadline=deadline)
    finally:
        lease.release()


def _run_leased(ray: Any, wf_path: str, catalog: str | None, caps: dict[str, Any], store_target: str,
                items: list[BatchItem], *, store: Store, batch_id: str, workers: int, per_worker: int, address: str | None,
                on_item: Callable[[BatchSummary, BatchItem, Any], None] | None, on_started: Callable[[list[Any]], None] | None,
                retry_errors: bool, max_attempts: int, stall_timeout: float | None,
                deadline: float | None = None) -> tuple[BatchSummary, dict[str, Any]]:
    known = {r["item_key"]: r for r in store.ledger_items(batch_id)}  # read under the lease
    summary, todo = pending(batch_id, items, known, retry_errors=retry_errors)
    started_here = not ray.is_initialized()
    if started_here:
        # no address: a fresh local Ray runtime ("local"), never whatever cluster happens to run on this machine
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 **({} if address else {"num_cpus": max(2, workers)}))
    gate = ray.remote(num_cpus=0)(_GateState).options(max_concurrency=10_000).remote(caps)
    t_start = time.perf_counter()
    pool = _Pool(ray, gate, (wf_path, catalog, store_target, gate, batch_id, deadline), workers, per_worker, store, batch_id, summary,
                 max_attempts)
    startup_s = time.perf_counter() - t_start  # each worker has imported turnout and loaded the workflow
    if on_started is not None:
        on_started(pool.actors)
    t0 = time.perf_counter()
    try:
        pool.run(list(todo), t0, stall_timeout, on_item)
        stats = {**ray.get(gate.stats.remote()), "startup_s": startup_s}
        ray.get([a.close.remote() for a in pool.actors])  # their trace rows are flushed before they go
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        summary.elapsed_s = time.perf_counter() - t0
        for a in pool.actors:
            ray.kill(a)
        ray.kill(gate)
        if started_here:
            ray.shutdown()
    return summary, stats


class _Pool:
    """The driver's side of a Ray batch: the worker actors, what each has in flight, the queue."""

    def __init__(self, ray: Any, gate: Any, args: tuple[Any, ...], workers: int, per_worker: int, store: Store, batch_id: str,
                 summary: BatchSummary, max_attempts: int) -> None:
        self.ray, self.gate, self.args, self.per_worker = ray, gate, args, per_worker
        self.store, self.batch_id, self.summary, self.max_attempts = store, batch_id, summary, max_attempts
        self.Worker = ray.remote(num_cpus=0, max_restarts=0)(_Worker)
        self.actors = [self._start() for _ in range(workers)]
        self.owners = ray.get([a.ready.remote() for a in self.actors])
        self.load = [0] * workers
        self.by_ref: dict[Any, tuple[BatchItem, int, int]] = {}  # ref -> (item, attempt, actor index)
        self.queue: list[BatchItem] = []
        self.attempts: dict[str, int] = {}

    def _start(self) -> Any:
        return self.Worker.options(max_concurrency=self.per_worker).remote(*self.args)

    def _status(self, key: str) -> str | None:
        return next((r["status"] for r in self.store.ledger_items(self.batch_id) if r["item_key"] == key), None)

    def submit(self) -> None:
        while self.queue:
            free = [i for i, n in enumerate(self.load) if n < self.per_worker]
            if not free:
                return
            i = min(free, key=lambda j: self.load[j])
            it = self.queue.pop(0)
            if self.attempts.get(it.key) and self._status(it.key) == "done":  # finished just before its worker died
                self.summary.done += 1
                continue
            self.attempts[it.key] = self.attempts.get(it.key, 0) + 1
            self.by_ref[self.actors[i].run.remote(it.key, it.line, it.input)] = (it, self.attempts[it.key], i)
            self.load[i] += 1

    def replace(self, i: int, it: BatchItem, attempt: int) -> None:
        """Worker ``i`` died: free what it held in the gate, start another, run its items again (the
        ledger says "running"), or give up on an item after ``max_attempts``."""
        self.ray.get(self.gate.release_owner.remote(self.owners[i]))
        self.actors[i] = self._start()
        self.owners[i] = self.ray.get(self.actors[i].ready.remote())
        self.load[i] = 0
        if attempt >= self.max_attempts:
            self.summary.errors += 1
            self.store.ledger_record(self.batch_id, it.key, line=it.line, status="error", error=f"worker died {attempt} times")
        else:
            self.queue.insert(0, it)
        for r, (it2, _a, j) in list(self.by_ref.items()):
            if j == i:  # its other in-flight items will fail too: requeue them now
                self.by_ref.pop(r)
                self.queue.insert(0, it2)

    def run(self, todo: list[BatchItem], t0: float, stall_timeout: float | None,
            on_item: Callable[[BatchSummary, BatchItem, Any], None] | None) -> None:
        ray = self.ray
        self.queue = todo
        self.submit()
        while self.by_ref:
            done, _ = ray.wait(list(self.by_ref), num_returns=1, timeout=stall_timeout)
            if not done:  # a watchdog, so a stuck cluster is an error and not a silent hang
                raise TurnoutError(f"no item finished in {stall_timeout:g} s on Ray ({len(self.by_ref)} in flight); "
                                   f"gate: {ray.get(self.gate.stats.remote())}")
            it, attempt, i = self.by_ref.pop(done[0])
            self.load[i] -= 1
            try:
                res = ray.get(done[0])
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError):
                self.replace(i, it, attempt)
            else:
                self.summary.count(res["ok"], res["cost_usd"], t0)
                if on_item is not None:
                    on_item(self.summary, it, res)
            self.submit()
