"""Spend control: budgets per run, workflow, API key, team, model and period, all reserve-then-settle.

A ``Budget`` names a scope (``global``, ``run``, ``workflow``, ``key``, ``team``, ``model``), which
member of it (``match``; ``"*"`` = each one separately: every run gets its own ledger), a limit in
USD and an optional calendar period (``hour``, ``day``, ``week``, ``month``, in UTC: the ledger
starts afresh when the period turns). ``SpendControl`` holds the budgets; a call is charged to
every budget that applies to it — the model is the callee, run/workflow/key/team come from
``turnout.spend_scope`` (``store.run`` and ``Workflow.run`` set run and workflow; the gateway sets
key and team). The worst-case cost is reserved on all of them at once, under one lock, before the
call; if any would pass its limit the call is refused with ``BudgetExceeded`` naming that budget
and nothing stays reserved. The real cost is settled after. So 100 concurrent calls cannot
overspend any budget by more than the amount a call's real cost exceeds its estimate.

Alerts: each budget fires ``on_alert(status, fraction)`` once per ledger when spend crosses a
fraction of its limit (default 0.5, 0.8, 0.95; default action: a warning log line).

With ``store=``, a period budget's ledger starts from the spend the store already recorded in that
period (so a restart does not reset a daily budget).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import BudgetExceeded, ConfigError
from .._scope import current_scope, spend_scope
from .._types import PERIODS, period_start
from .budget import BudgetLedger, Reservation

__all__ = ["Budget", "BudgetStatus", "SpendControl", "load_budgets", "period_start", "spend_scope"]

log = logging.getLogger(__name__)

Scope = Literal["global", "run", "workflow", "key", "team", "model"]
Period = Literal["hour", "day", "week", "month"]
SCOPES: tuple[str, ...] = ("global", "run", "workflow", "key", "team", "model")


@dataclass(frozen=True, slots=True)
class Budget:
    limit_usd: float
    scope: Scope = "global"
    match: str = "*"
    period: Period | None = None
    alerts: tuple[float, ...] = (0.5, 0.8, 0.95)
    name: str = ""

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(f"budget {self.label!r}: unknown scope {self.scope!r}; use one of {', '.join(SCOPES)}")
        if self.period is not None and self.period not in PERIODS:
            raise ConfigError(f"budget {self.label!r}: unknown period {self.period!r}; use one of {', '.join(PERIODS)}")
        if self.limit_usd < 0:
            raise ConfigError(f"budget {self.label!r}: limit must be >= 0, got {self.limit_usd}")
        if any(not 0 < a <= 1 for a in self.alerts):
            raise ConfigError(f"budget {self.label!r}: alerts are fractions of the limit in (0, 1], got {list(self.alerts)}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        who = self.scope if self.scope == "global" else f"{self.scope}:{self.match}"
        return f"{who}/{self.period}" if self.period else who


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: Budget
    member: str  # which run/model/key... ("" for global)
    period_start: float
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    calls: int

    @property
    def used(self) -> float:
        return self.spent_usd / self.limit_usd if self.limit_usd else 1.0

    @property
    def label(self) -> str:
        b = self.budget
        if b.scope == "global" or b.match != "*":
            return b.label
        return f"{b.label} [{self.member}]"


@dataclass(slots=True)
class Hold:
    """The reservations of one call on every budget that applies to it."""

    amount: float
    parts: list[tuple[BudgetLedger, Reservation]] = field(default_factory=list)
    settled: bool = False


class SpendControl:
    """Budgets over scopes and periods. Use it where a ``BudgetLedger`` goes (``Budgeted(m, spend)``,
    ``Catalog(spend=...)``): it has the same reserve/settle/release protocol."""

    def __init__(
        self,
        budgets: Sequence[Budget],
        *,
        store: Any = None,
        on_alert: Callable[[BudgetStatus, float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        labels = [b.label for b in budgets]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ConfigError(f"two budgets with the same name {sorted(dup)}: give one a name:")
        self.budgets = list(budgets)
        self.store = store
        self.on_alert = on_alert
        self.clock = clock
        self._ledgers: dict[tuple[int, str, float], BudgetLedger] = {}
        self._seeds: dict[tuple[int, str, float], float] = {}  # past spend read by prepare(), not yet in a ledger
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SpendControl({[b.label for b in self.budgets]})"

    # -- which budgets apply ------------------------------------------------------------------------
    def _members(self, model: str) -> Mapping[str, str | None]:
        sc = current_scope()
        return {"global": "", "run": sc.run, "workflow": sc.workflow, "key": sc.key, "team": sc.team, "model": model or None}

    def _ledger(self, i: int, member: str, now: float) -> BudgetLedger:
        b = self.budgets[i]
        start = period_start(b.period, now)
        k = (i, member, start)
        led = self._ledgers.get(k)
        if led is None:
            def alert(ledger: BudgetLedger, frac: float, _b: Budget = b, _m: str = member, _s: float = start) -> None:
                st = BudgetStatus(_b, _m, _s, ledger.limit, ledger.spent, ledger.reserved, ledger.calls)
                if self.on_alert is not None:
                    self.on_alert(st, frac)
                else:
                    log.warning("budget %s: %.0f%% used ($%.6f of $%.6f)", st.label, frac * 100, ledger.spent, ledger.limit)

            led = BudgetLedger(b.limit_usd, name=b.label if not member or b.match != "*" else f"{b.label} [{member}]",
                               alerts=b.alerts, on_alert=alert)
            if b.period is not None and self.store is not None:
                seed = self._seeds.pop(k, None)
                led.spent = seed if seed is not None else self._recorded(b, member, start)
            # old periods of this budget are finished: drop their ledgers
            for old in [x for x in self._ledgers if x[0] == i and x[1] == member and x[2] != start]:
                del self._ledgers[old]
            self._ledgers[k] = led
        return led

    def _recorded(self, b: Budget, member: str, since: float) -> float:
        kw: dict[str, str] = {}
        if b.scope in ("model", "workflow", "key", "team"):
            kw[b.scope] = member
        elif b.scope == "run":
            return 0.0
        try:
            return float(self.store.spend(since=since, **kw))
        except Exception as e:  # noqa: BLE001 - an unreachable store must not stop spending control
            log.warning("budget %s: could not read past spend from the store (%s); starting from $0", b.label, type(e).__name__)
            return 0.0

    def applicable(self, model: str = "") -> list[tuple[int, str]]:
        members = self._members(model)
        out = []
        for i, b in enumerate(self.budgets):
            m = members[b.scope]
            if m is None or (b.match != "*" and m != b.match):
                continue
            out.append((i, m))
        return out

    # -- the ledger protocol --------------------------------------------------------------------------
    async def prepare(self, model: str = "") -> None:
        """Read, in a thread, the past spend of every period budget this call will open a ledger for
        (``Budgeted`` awaits this first, so the store is never read on the event loop)."""
        if self.store is None:
            return
        now = self.clock()
        for i, member in self.applicable(model):
            b = self.budgets[i]
            k = (i, member, period_start(b.period, now))
            if b.period is not None and k not in self._ledgers and k not in self._seeds:
                self._seeds[k] = await asyncio.to_thread(self._recorded, b, member, k[2])

    def reserve(self, amount: float, *, model: str = "") -> Hold:
        hold = Hold(amount)
        with self._lock:
            now = self.clock()
            try:
                for i, member in self.applicable(model):
                    led = self._ledger(i, member, now)
                    hold.parts.append((led, led.reserve(amount)))
            except BudgetExceeded:
                for led, r in hold.parts:
                    led.release(r)
                raise
        return hold

    def settle(self, hold: Hold, actual: float) -> None:
        if hold.settled:
            return
        hold.settled = True
        for led, r in hold.parts:
            led.settle(r, actual)

    def release(self, hold: Hold) -> None:
        if hold.settled:
            return
        hold.settled = True
        for led, r in hold.parts:
            led.release(r)

    # -- reading ----------------------------------------------------------------------------------------
    def status(self) -> list[BudgetStatus]:
        """Every ledger of the current periods (a ``match: "*"`` budget has one per member seen)."""
        now = self.clock()
        out = []
        with self._lock:
            for (i, member, start), led in sorted(self._ledgers.items(), key=lambda kv: (kv[0][0], kv[0][1])):
                b = self.budgets[i]
                if start != period_start(b.period, now):
                    continue
                out.append(BudgetStatus(b, member, start, led.limit, led.spent, led.reserved, led.calls))
        return out

    def model_limits(self, model: str) -> list[BudgetStatus]:
        """The model budgets of ``model``, current period, seeded from the store if there is one."""
        with self._lock:
            now = self.clock()
            res = []
            for i, b in enumerate(self.budgets):
                if b.scope == "model" and b.match in ("*", model):
                    led = self._ledger(i, model, now)
                    res.append(BudgetStatus(b, model, period_start(b.period, now), led.limit, led.spent, led.reserved, led.calls))
            return res


def load_budgets(items: Any, path: Any = None, root: Any = None, **kw: Any) -> SpendControl:
    """Budgets from a YAML list: ``- {scope: model, match: gpt-4o, limit_usd: 20, period: day, alerts: [0.8]}``."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from .._yaml import line_of, located_error

    class _BudgetIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        limit_usd: float = Field(ge=0)
        scope: Literal["global", "run", "workflow", "key", "team", "model"] = "global"
        match: str = "*"
        period: Literal["hour", "day", "week", "month"] | None = None
        alerts: list[float] = [0.5, 0.8, 0.95]
        name: str = ""

    where = f"{path}:{line_of(root, ('budgets',))}: " if path is not None else ""
    if not isinstance(items, list):
        raise ConfigError(f"{where}budgets: a list of budgets (each with limit_usd, scope, match, period)")
    out = []
    for n, body in enumerate(items):
        try:
            b = _BudgetIn.model_validate(body)
        except ValidationError as e:
            if path is not None:
                raise located_error(path, root, e, ("budgets", n)) from None
            raise ConfigError(f"budgets[{n}]: {e}") from None
        try:
            out.append(Budget(b.limit_usd, b.scope, b.match, b.period, tuple(b.alerts), b.name))
        except ConfigError as e:
            raise ConfigError(f"{where}budgets[{n}]: {e}") from None
    try:
        return SpendControl(out, **kw)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None
