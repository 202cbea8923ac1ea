"""Spend control: budgets per run, workflow, API key, team, model and period, all reserve-then-settle.

A ``Budget`` names a scope (``global``, ``run``, ``workflow``, ``key``, ``team``, ``model``), which
member of it (``match``; ``"*"`` = each one separately: every run gets its own ledger), a limit in
USD and an optional calendar period (``hour``, ``day``, ``week``, ``month``, in UTC: the ledger
starts afresh when the period turns). ``SpendControl`` holds the budgets; a call is charged to
every budget that applies to it — the model is the callee, run/workflow/key/team come from
``turnout.spend_scope`` (``store.run`` and ``Workflow.run`` set run and workflow; the gateway sets
key and team). The worst-case cost is reserved on each of them before the call, each atomically;
if any would pass its limit the call is refused with ``BudgetExceeded`` naming that budget and the
others are released, so nothing stays reserved. The real cost is settled after. So 100 concurrent calls cannot
overspend any budget by more than the amount a call's real cost exceeds its estimate.

Alerts: each budget fires ``on_alert(status, fraction)`` once per ledger when spend crosses a
fraction of its limit (default 0.5, 0.8, 0.95; default action: a warning log line).

With ``store=``, a budget's ledger starts from the spend the store already recorded for it (in its
current period, or ever for a budget without one; read in a thread) — so a restart does not reset
a daily budget or a key's total. Run budgets always start at $0.

The balances live in ``accounts`` (``turnout.policies.ledger``): in this process by default, in
Redis to share them between processes (the gateway's replicas), or in the Ray gate for a batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._errors import ConfigError
from .._scope import current_scope, spend_scope
from .._types import PERIODS, period_start
from .ledger import BudgetLedger, Hold, MemoryAccounts, reserve_all, settle_all

if TYPE_CHECKING:
    from ..store.base import RunReader

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


class SpendControl:
    """Budgets over scopes and periods: a ``Ledger`` (``Budgeted(m, spend)``, ``Catalog(spend=...)``)
    that charges each call to every budget that applies to it. ``accounts`` is where the balances
    live (default: this process; a ``RedisAccounts`` shares them between processes and replicas).
    ``bind={"key": "k-42"}`` fixes a scope's member instead of reading it from the call's scope."""

    def __init__(
        self,
        budgets: Sequence[Budget],
        *,
        store: RunReader | None = None,
        on_alert: Callable[[BudgetStatus, float], None] | None = None,
        clock: Callable[[], float] = time.time,
        accounts: Any = None,
        bind: Mapping[str, str] | None = None,
    ) -> None:
        labels = [b.label for b in budgets]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ConfigError(f"two budgets with the same name {sorted(dup)}: give one a name:")
        self.budgets = list(budgets)
        self.store = store
        self.on_alert = on_alert
        self.clock = clock
        self.accounts = accounts if accounts is not None else MemoryAccounts()
        self.bind = dict(bind or {})  # scopes whose member is fixed, not read from the call's scope (a key's own budget)
        self._ledgers: dict[tuple[int, str, float], BudgetLedger] = {}

    def __repr__(self) -> str:
        return f"SpendControl({[b.label for b in self.budgets]})"

    def share(self, accounts: Any) -> None:
        """Keep the balances in ``accounts`` from now on (Redis, the Ray gate); the ledgers opened on
        the previous accounts are dropped, so none keeps charging them."""
        self.accounts = accounts
        self._ledgers.clear()

    # -- which budgets apply ------------------------------------------------------------------------
    def _members(self, model: str) -> Mapping[str, str | None]:
        sc = current_scope()
        return {"global": "", "run": sc.run, "workflow": sc.workflow, "key": sc.key, "team": sc.team, "model": model or None,
                **self.bind}

    def applicable(self, model: str = "") -> list[tuple[int, str]]:
        members = self._members(model)
        out = []
        for i, b in enumerate(self.budgets):
            m = members[b.scope]
            if m is None or (b.match != "*" and m != b.match):
                continue
            out.append((i, m))
        return out

    def _make(self, i: int, member: str, start: float, seed: float) -> BudgetLedger:
        b = self.budgets[i]

        on_alert = self.on_alert

        def alert(ledger: BudgetLedger, frac: float) -> None:
            spent, reserved, calls = ledger.last
            on_alert(BudgetStatus(b, member, start, ledger.limit, spent, reserved, calls), frac)  # type: ignore[misc]

        # named as its BudgetStatus is labelled; without on_alert the ledger's own warning line says so
        return BudgetLedger(b.limit_usd, name=b.label if not member or b.match != "*" else f"{b.label} [{member}]",
                            alerts=b.alerts, on_alert=alert if on_alert is not None else None, accounts=self.accounts,
                            account=_account(b, member, start),
                            seed=seed, ttl=_PERIOD_S[b.period] * 1.5 if b.period else 0.0)

    async def _ledger(self, i: int, member: str, now: float) -> BudgetLedger:
        b = self.budgets[i]
        start = period_start(b.period, now)
        k = (i, member, start)
        led = self._ledgers.get(k)
        if led is None:
            seed = 0.0
            if self.store is not None and b.scope != "run" and not await self.accounts.exists(_account(b, member, start)):
                seed = await asyncio.to_thread(self._recorded, b, member, start if b.period else None)
            led = self._ledgers.get(k) or self._make(i, member, start, seed)  # another call may have made it meanwhile
            old = [x for x in self._ledgers if x[0] == i and x[1] == member and x[2] != start]
            for x in old:  # this budget's finished periods
                del self._ledgers[x]
            drop = getattr(self.accounts, "drop", None)
            if old and drop is not None:
                drop([_account(b, member, x[2]) for x in old])
            self._ledgers[k] = led
        return led

    def _recorded(self, b: Budget, member: str, since: float | None) -> float:
        """The spend the store recorded for this budget's member since ``since`` (None: ever)."""
        kw: dict[str, str] = {b.scope: member} if b.scope in ("model", "workflow", "key", "team") else {}
        if self.store is None:
            return 0.0
        try:
            return float(self.store.spend(since=since, **kw))
        except Exception as e:  # noqa: BLE001 - an unreachable store must not stop spending control
            log.warning("budget %s: could not read past spend from the store (%s); starting from $0", b.label, type(e).__name__)
            return 0.0

    # -- the Ledger protocol --------------------------------------------------------------------------
    async def reserve(self, amount: float, *, model: str = "") -> Hold:
        """Reserve on every budget that applies; if one refuses, release the others and raise."""
        now = self.clock()
        return await reserve_all([await self._ledger(i, member, now) for i, member in self.applicable(model)], amount)

    async def settle(self, hold: Hold, actual: float) -> None:
        await settle_all(hold, actual)

    async def release(self, hold: Hold) -> None:
        await settle_all(hold, None)

    # -- reading ----------------------------------------------------------------------------------------
    async def status(self) -> list[BudgetStatus]:
        """Every ledger of the current periods (a ``match: "*"`` budget has one per member seen)."""
        now = self.clock()
        out = []
        for (i, member, start), led in sorted(self._ledgers.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            b = self.budgets[i]
            if start != period_start(b.period, now):
                continue
            spent, reserved, calls = await led.balance()
            out.append(BudgetStatus(b, member, start, led.limit, spent, reserved, calls))
        return out

    async def model_limits(self, model: str) -> list[BudgetStatus]:
        """The model budgets of ``model`` in their current period (seeded from the store if there is one)."""
        now, out = self.clock(), []
        for i, b in enumerate(self.budgets):
            if b.scope == "model" and b.match in ("*", model):
                led = await self._ledger(i, model, now)
                spent, reserved, calls = await led.balance()
                out.append(BudgetStatus(b, model, period_start(b.period, now), led.limit, spent, reserved, calls))
        return out


_PERIOD_S = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 31 * 86400}


def _account(b: Budget, member: str, start: float) -> str:
    """The account of one budget member in one period: the same name in every process that shares
    the accounts (Redis), so replicas charge one balance."""
    return f"budget:{b.label}|{member}|{int(start)}"


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
