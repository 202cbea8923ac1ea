"""One fan-out engine under sectioning, voting, guardrails and orchestration.

Structured concurrency: ``min(cap, n)`` workers in one ``asyncio.TaskGroup`` pull branch indices in
order, so no task outlives the call and a branch that was never started costs nothing. Every
branch ends as an :class:`Envelope` — ``ok``, ``error``, ``timeout`` or ``cancelled`` — in input
order, with its value or error, cost, tokens and latency.

Policies: ``"best_effort"`` runs everything; ``"fail_fast"`` cancels the rest at the first failure;
``Quorum(k)`` stops (and cancels the rest) as soon as k branches succeed. ``stop_when`` lets a caller
(voting's early stop) end the fan-out after any branch. Cancellation is real: a cancelled branch's
coroutine is cancelled, which closes its HTTP request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from .. import _telemetry
from .._errors import ConfigError, TurnoutError
from .._scope import current_scope

__all__ = ["Envelope", "FanoutError", "FanoutResult", "Quorum", "fan_out"]

T = TypeVar("T")
Status = Literal["ok", "error", "timeout", "cancelled"]


class Envelope(NamedTuple, Generic[T]):
    index: int
    status: Status
    value: T | None = None
    error: BaseException | None = None
    latency_s: float = 0.0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class Quorum:
    """Stop as soon as ``k`` branches have succeeded."""

    k: int


Policy = Literal["best_effort", "fail_fast"] | Quorum


class FanoutError(TurnoutError, ExceptionGroup):  # type: ignore[misc]
    """Raised by :meth:`FanoutResult.raise_for_errors`: every failed branch's error, grouped."""

    def __new__(cls, message: str, errors: Sequence[BaseException]) -> FanoutError:
        return super().__new__(cls, message, list(errors))

    def __init__(self, message: str, errors: Sequence[BaseException]) -> None:
        super().__init__(message, list(errors))


@dataclass
class FanoutResult(Generic[T]):
    envelopes: list[Envelope[T]]
    stopped_early: bool = False
    stop_reason: str = ""
    wall_s: float = 0.0
    max_concurrent: int = 0

    @property
    def values(self) -> list[T]:
        """The successful values, in input order."""
        return [e.value for e in self.envelopes if e.status == "ok"]  # type: ignore[misc]

    @property
    def failed(self) -> list[Envelope[T]]:
        return [e for e in self.envelopes if e.status in ("error", "timeout")]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def cost_usd(self) -> float:
        return sum(e.cost_usd for e in self.envelopes)

    @property
    def started(self) -> int:
        return sum(1 for e in self.envelopes if not (e.status == "cancelled" and e.latency_s == 0.0))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.envelopes:
            out[e.status] = out.get(e.status, 0) + 1
        return out

    def raise_for_errors(self) -> None:
        errs = [e.error or TimeoutError(f"branch {e.index} timed out") for e in self.failed]
        if errs:
            raise FanoutError(f"{len(errs)} of {len(self.envelopes)} branches failed", errs)


def _usage(value: Any) -> tuple[float, int, int]:
    cost = getattr(value, "cost_usd", 0.0) or 0.0
    u = getattr(value, "usage", None)
    return float(cost), int(getattr(u, "input_tokens", 0) or 0), int(getattr(u, "output_tokens", 0) or 0)


async def fan_out(
    branches: Sequence[Callable[[], Awaitable[T]]],
    *,
    concurrency: int | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    policy: Policy = "best_effort",
    stop_when: Callable[[list[Envelope[T] | None]], bool] | None = None,
    ledger: Any = None,
    estimated_cost: float = 0.0,
    model: str = "",
) -> FanoutResult[T]:
    """Run ``branches`` (zero-argument coroutine functions) with at most ``concurrency`` at once.

    ``timeout`` bounds each branch, ``deadline`` the whole fan-out (branches still running then
    end as ``timeout``, those not started as ``cancelled``). With a ``ledger`` (a ``BudgetLedger``, or
    a ``SpendControl`` whose run/workflow/key/global budgets apply in the current scope; ``model``
    selects model budgets), a fan-out whose ``estimated_cost`` (total) does not fit what is left is
    refused with ``BudgetExceeded`` before anything starts.
    """
    n = len(branches)
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    if isinstance(policy, Quorum) and not 1 <= policy.k <= max(1, n):
        raise ConfigError(f"quorum k={policy.k} is impossible with {n} branches")
    if ledger is not None and estimated_cost > 0:
        # a trial reservation of the whole estimate, released at once: the calls reserve their own
        # costs as they run. With a SpendControl this checks every budget that applies in the current
        # scope (the run's, the workflow's, the key's, global) in one step.
        await ledger.release(await ledger.reserve(estimated_cost, model=model))
    due = current_scope().deadline  # a run's deadline bounds its fan-outs too
    if due is not None:
        left = max(0.0, due - time.monotonic())
        deadline = left if deadline is None else min(deadline, left)
    t_start = time.perf_counter()
    if n == 0:
        return FanoutResult([], wall_s=0.0)
    run = _Run(branches, timeout, policy, stop_when)
    await run.run(min(n, concurrency or n), deadline)
    return FanoutResult(run.results, run.stopping, run.reason, time.perf_counter() - t_start, run.max_active)  # type: ignore[arg-type]


class _Run(Generic[T]):
    """One fan-out in progress: ``cap`` workers in one task group pull branch indices in order (a
    branch never started costs nothing); every branch ends as an envelope in ``results``."""

    def __init__(self, branches: Sequence[Callable[[], Awaitable[T]]], timeout: float | None, policy: Policy,
                 stop_when: Callable[[list[Envelope[T] | None]], bool] | None) -> None:
        self.branches, self.timeout, self.policy, self.stop_when = branches, timeout, policy, stop_when
        self.results: list[Envelope[T] | None] = [None] * len(branches)
        self.next_index = 0
        self.running: dict[int, asyncio.Task[Any]] = {}  # branch index -> the worker task running it
        self.stopping, self.reason, self.deadline_hit = False, "", False
        self.active = self.max_active = self.succeeded = 0

    def stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping, self.reason = True, reason
        me = asyncio.current_task()
        for task in list(self.running.values()):
            if task is not me:
                task.cancel()

    def after(self, env: Envelope[T]) -> None:
        self.results[env.index] = env
        if env.status == "ok":
            self.succeeded += 1
            if isinstance(self.policy, Quorum) and self.succeeded >= self.policy.k:
                self.stop(f"quorum of {self.policy.k} reached")
        elif env.status in ("error", "timeout") and self.policy == "fail_fast":
            self.stop(f"branch {env.index} failed ({env.status})")
        if self.stop_when is not None and not self.stopping and self.stop_when(self.results):
            self.stop("stop condition met")

    async def run_one(self, i: int) -> None:
        t0 = time.perf_counter()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            with _telemetry.span(f"branch {i}", {"turnout.branch": i}):
                if self.timeout is not None:
                    async with asyncio.timeout(self.timeout):
                        value = await self.branches[i]()
                else:
                    value = await self.branches[i]()
        except TimeoutError as e:
            self.after(Envelope(i, "timeout", None, e, time.perf_counter() - t0))
        except asyncio.CancelledError:
            if not self.stopping:
                raise  # the caller cancelled us: structured cancellation propagates
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own stop: the branch ends as an envelope, the worker exits
            status: Status = "timeout" if self.deadline_hit else "cancelled"
            self.results[i] = Envelope(i, status, None, None, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - every failure becomes an envelope
            self.after(Envelope(i, "error", None, e, time.perf_counter() - t0))
        else:
            cost, tin, tout = _usage(value)
            self.after(Envelope(i, "ok", value, None, time.perf_counter() - t0, cost, tin, tout))
        finally:
            self.active -= 1

    async def worker(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self.stopping and self.next_index < len(self.branches):
            i = self.next_index
            self.next_index += 1
            self.running[i] = me
            try:
                await self.run_one(i)
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
                if self.results[i] is None:
                    self.results[i] = Envelope(i, "timeout" if self.deadline_hit else "cancelled", None, None, 0.0)
                # a cancel aimed at the branch may also land between branches: swallow it, we are stopping
                me.uncancel()
                return
            finally:
                self.running.pop(i, None)

    def on_deadline(self, deadline: float) -> None:
        self.deadline_hit = True
        for task in list(self.running.values()):
            task.cancel()
        self.stop(f"deadline of {deadline}s reached")

    async def run(self, cap: int, deadline: float | None) -> None:
        watchdog = asyncio.get_running_loop().call_later(deadline, self.on_deadline, deadline) if deadline is not None else None
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(cap):
                    tg.create_task(self.worker())
        finally:
            if watchdog is not None:
                watchdog.cancel()
        for i, r in enumerate(self.results):
            if r is None:  # never started
                self.results[i] = Envelope(i, "timeout" if self.deadline_hit else "cancelled")
