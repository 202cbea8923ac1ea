"""The one budget mechanism: a ``Ledger`` reserves a call's worst-case cost before the call and
settles the real cost after (``release`` when the call failed before costing anything).

Every budget in turnout — a ``BudgetLedger``, the ``SpendControl`` budgets of a catalog (global,
run, workflow, key, team, model), a gateway key's budget, a Ray batch's cluster-wide budgets — is
this protocol over one of three ``Accounts`` backends that keep the balances:

- ``MemoryAccounts`` (this module): one process;
- ``RedisAccounts`` (``turnout.policies.shared``): every process and gateway replica that uses the
  same Redis, checked and reserved atomically by a Lua script;
- the Ray gate (``turnout.workflows.ray_backend``): one actor every worker of a batch calls.

An account is a balance (spent, reserved, calls) under a name; ``take`` checks the limit and
reserves in one atomic step, so N concurrent callers cannot jointly pass it: a ledger is overrun by
at most what a call's real cost exceeds its reservation. An account is created by its first
``take`` with ``seed`` as its spend (past spend read from the trace store), and expires ``ttl``
seconds later when given one (a finished period).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._errors import BudgetExceeded, ConfigError

__all__ = ["Accounts", "BudgetLedger", "Hold", "Ledger", "MemoryAccounts", "reserve_all", "settle_all"]

log = logging.getLogger(__name__)

EPS = 1e-12  # float slack in every limit check (memory, Lua, the gate)


@dataclass(slots=True)
class Hold:
    """One reservation: ``amount`` on a ledger; ``token`` is what its ``Accounts`` gave back (or, for a
    ledger over several budgets, the holds of each). Settled or released once."""

    amount: float
    token: Any = None
    done: bool = False


@runtime_checkable
class Ledger(Protocol):
    """A budget: ``await reserve(amount, model=)`` raises ``BudgetExceeded`` when the call could take it
    past its limit (and nothing stays reserved); ``settle(hold, actual)`` books the real cost;
    ``release(hold)`` frees a call that cost nothing. Both are idempotent."""

    async def reserve(self, amount: float, *, model: str = "") -> Hold: ...

    async def settle(self, hold: Hold, actual: float) -> None: ...

    async def release(self, hold: Hold) -> None: ...


async def reserve_all(ledgers: Iterable[Ledger], amount: float, *, model: str = "") -> Hold:
    """One hold over several ledgers (every budget a call is charged to): each reserves ``amount``;
    when one refuses, those already taken are released and its ``BudgetExceeded`` raised, so a
    refused call holds nothing anywhere. Settle it with ``settle_all``."""
    parts: list[tuple[Ledger, Hold]] = []
    try:
        for led in ledgers:
            parts.append((led, await led.reserve(amount, model=model)))
    except BaseException:
        for led, h in parts:
            await led.release(h)
        raise
    return Hold(amount, parts)


async def settle_all(hold: Hold, actual: float | None) -> None:
    """Book ``actual`` on every ledger of a ``reserve_all`` hold, or release them all (``None``: the
    call cost nothing); once — a second call does nothing."""
    if hold.done:
        return
    hold.done = True
    for led, h in hold.token:
        await (led.release(h) if actual is None else led.settle(h, actual))


class Accounts(Protocol):
    """Where ledgers keep their balances (memory, Redis, the Ray gate)."""

    async def take(self, account: str, amount: float, limit: float, *, seed: float = 0.0,
                   ttl: float = 0.0) -> tuple[Any, float, float]:
        """Reserve ``amount`` if ``spent + reserved + amount <= limit``: ``(token, spent, reserved)``,
        token None (and nothing reserved) when it does not fit."""
        ...

    async def give(self, token: Any, actual: float | None) -> tuple[float, float, int]:
        """Settle a reservation at ``actual`` (None: release it, not counted as a call); the balance after."""
        ...

    async def exists(self, account: str) -> bool: ...

    async def balance(self, account: str) -> tuple[float, float, int]:
        """``(spent, reserved, calls)``; zeros for an account never taken from."""
        ...


class MemoryAccounts:
    """Balances in this process. Thread-safe (one lock), so a catalog shared by threads holds too."""

    def __init__(self) -> None:
        self._acc: dict[str, list[float]] = {}  # account -> [spent, reserved, calls]
        self._lock = threading.Lock()

    # the synchronous core (the Ray gate actor calls these directly)
    def take_now(self, account: str, amount: float, limit: float, seed: float = 0.0) -> tuple[Any, float, float]:
        with self._lock:
            a = self._acc.get(account)
            if a is None:
                a = self._acc[account] = [float(seed), 0.0, 0]
            spent, reserved = a[0], a[1]
            if spent + reserved + amount > limit + EPS:
                return None, spent, reserved
            a[1] += amount
            return (account, amount), spent, reserved

    def give_now(self, token: Any, actual: float | None) -> tuple[float, float, int]:
        account, amount = token
        with self._lock:
            a = self._acc.get(account)
            if a is None:  # dropped meanwhile (its period turned): nothing left to book
                return 0.0, 0.0, 0
            a[1] -= amount
            if actual is not None:
                a[0] += actual
                a[2] += 1
            return a[0], a[1], int(a[2])

    def exists_now(self, account: str) -> bool:
        return account in self._acc

    def balance_now(self, account: str) -> tuple[float, float, int]:
        a = self._acc.get(account)
        return (a[0], a[1], int(a[2])) if a is not None else (0.0, 0.0, 0)

    def accounts(self) -> list[str]:
        return list(self._acc)

    def drop(self, accounts: Sequence[str]) -> None:
        """Forget finished accounts (a period that has turned)."""
        with self._lock:
            for k in accounts:
                self._acc.pop(k, None)

    # the Accounts protocol
    async def take(self, account: str, amount: float, limit: float, *, seed: float = 0.0,
                   ttl: float = 0.0) -> tuple[Any, float, float]:
        return self.take_now(account, amount, limit, seed)

    async def give(self, token: Any, actual: float | None) -> tuple[float, float, int]:
        return self.give_now(token, actual)

    async def exists(self, account: str) -> bool:
        return self.exists_now(account)

    async def balance(self, account: str) -> tuple[float, float, int]:
        return self.balance_now(account)


class BudgetLedger:
    """A USD limit with reservations, on one account of ``accounts`` (default: its own, in memory).
    ``alerts`` are fractions of the limit (e.g. 0.5, 0.8) at which ``on_alert(ledger, fraction)`` is
    called once (default: a warning log line)."""

    def __init__(
        self,
        limit_usd: float,
        *,
        name: str = "",
        alerts: Sequence[float] = (0.8,),
        on_alert: Callable[[BudgetLedger, float], None] | None = None,
        accounts: Any = None,
        account: str = "",
        seed: float = 0.0,
        ttl: float = 0.0,
    ) -> None:
        if limit_usd < 0:
            raise ConfigError(f"budget limit must be >= 0, got {limit_usd}")
        self.limit = float(limit_usd)
        self.name = name
        self.accounts = accounts if accounts is not None else MemoryAccounts()
        self.account = account or f"ledger:{id(self):x}"
        self.seed, self.ttl = seed, ttl
        self._alerts = sorted(alerts)
        self._fired: set[float] = set()
        self._on_alert = on_alert
        self.last: tuple[float, float, int] = (seed, 0.0, 0)  # the balance after the last settle

    def __repr__(self) -> str:
        return f"BudgetLedger(name={self.name!r}, limit={self.limit}, account={self.account!r})"

    # -- reading (exact for memory accounts; ``await balance()`` for any) ------------------------------
    def _now(self) -> tuple[float, float, int]:
        read = getattr(self.accounts, "balance_now", None)
        if read is None:
            raise TypeError(f"{type(self.accounts).__name__} is read with: await ledger.balance()")
        return read(self.account)  # type: ignore[no-any-return]

    @property
    def spent(self) -> float:
        return self._now()[0]

    @property
    def reserved(self) -> float:
        return self._now()[1]

    @property
    def calls(self) -> int:
        return self._now()[2]

    @property
    def remaining(self) -> float:
        spent, reserved, _ = self._now()
        return self.limit - spent - reserved

    async def balance(self) -> tuple[float, float, int]:
        return await self.accounts.balance(self.account)  # type: ignore[no-any-return]

    # -- the Ledger protocol --------------------------------------------------------------------------
    async def reserve(self, amount: float, *, model: str = "") -> Hold:
        token, spent, reserved = await self.accounts.take(self.account, amount, self.limit, seed=self.seed, ttl=self.ttl)
        if token is None:
            raise BudgetExceeded(limit=self.limit, spent=spent, reserved=reserved, requested=amount, name=self.name)
        return Hold(amount, token)

    async def settle(self, hold: Hold, actual: float) -> None:
        if hold.done:
            return
        hold.done = True
        self.last = await self.accounts.give(hold.token, actual)
        spent = self.last[0]
        fire = [a for a in self._alerts if a not in self._fired and spent >= a * self.limit]
        self._fired.update(fire)
        for a in fire:
            if self._on_alert is not None:
                self._on_alert(self, a)
            else:
                log.warning("budget %s: %.0f%% used ($%.6f of $%.6f)", self.name or "(unnamed)", a * 100, spent, self.limit)

    async def release(self, hold: Hold) -> None:
        if hold.done:
            return
        hold.done = True
        await self.accounts.give(hold.token, None)
