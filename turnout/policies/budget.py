"""Budgeted: reserve a call's worst-case cost before it is made, settle the real cost after.

Because reservations are taken before any call starts, 100 concurrent branches see each other's
reservations and cannot jointly pass the limit: the ledger can only be overrun by the amount a
call's real cost exceeds its estimate (the estimate uses ``max_tokens``, so for a well-behaved
provider it is an upper bound).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import BudgetExceeded, ConfigError
from .._types import Completion, Price, Request, StreamChunk
from ..models.base import ChatModel
from .base import Wrapper

__all__ = ["BudgetLedger", "Budgeted", "Reservation"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Reservation:
    amount: float
    settled: bool = False


class BudgetLedger:
    """A USD limit with reservations. ``alerts`` are fractions of the limit (e.g. 0.5, 0.8) at which
    ``on_alert(ledger, fraction)`` is called once (default: a warning log line)."""

    def __init__(
        self,
        limit_usd: float,
        *,
        name: str = "",
        alerts: Sequence[float] = (0.8,),
        on_alert: Callable[[BudgetLedger, float], None] | None = None,
    ) -> None:
        if limit_usd < 0:
            raise ConfigError(f"budget limit must be >= 0, got {limit_usd}")
        self.limit = float(limit_usd)
        self.name = name
        self.spent = 0.0
        self.reserved = 0.0
        self.calls = 0
        self._alerts = sorted(alerts)
        self._fired: set[float] = set()
        self._on_alert = on_alert
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BudgetLedger(name={self.name!r}, limit={self.limit}, spent={self.spent:.6f}, reserved={self.reserved:.6f})"

    @property
    def remaining(self) -> float:
        return self.limit - self.spent - self.reserved

    def reserve(self, amount: float, *, model: str = "") -> Reservation:
        with self._lock:
            if self.spent + self.reserved + amount > self.limit + 1e-12:
                raise BudgetExceeded(limit=self.limit, spent=self.spent, reserved=self.reserved, requested=amount, name=self.name)
            self.reserved += amount
            return Reservation(amount)

    def settle(self, r: Reservation, actual: float) -> None:
        with self._lock:
            if r.settled:
                return
            r.settled = True
            self.reserved -= r.amount
            self.spent += actual
            self.calls += 1
            fire = [a for a in self._alerts if a not in self._fired and self.spent >= a * self.limit]
            self._fired.update(fire)
        for a in fire:
            if self._on_alert is not None:
                self._on_alert(self, a)
            else:
                log.warning("budget %s: %.0f%% used ($%.6f of $%.6f)", self.name or "(unnamed)", a * 100, self.spent, self.limit)

    def release(self, r: Reservation) -> None:
        """The call failed before costing anything: free the reservation."""
        self.settle(r, 0.0)
        with self._lock:
            self.calls -= 1


class Budgeted(Wrapper):
    """Refuses calls (``BudgetExceeded``) that could take ``ledger`` past its limit. ``ledger`` is a
    ``BudgetLedger`` or a ``SpendControl`` (every budget that applies to this model and scope)."""

    def __init__(self, inner: ChatModel, ledger: Any, *, price: Price | None = None, default_max_tokens: int = 512) -> None:
        super().__init__(inner)
        self.ledger = ledger
        self._price = price
        self.default_max_tokens = default_max_tokens

    @property
    def price(self) -> Price:
        return self._price or self.inner.price

    async def complete(self, request: Request) -> Completion:
        r = self.ledger.reserve(self.price.estimate(request, self.default_max_tokens), model=self.inner.name)
        try:
            c = await self.inner.complete(request)
        except BaseException:
            self.ledger.release(r)  # a failed HTTP call is not billed by providers
            raise
        self.ledger.settle(r, c.cost_usd)
        return c

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        r = self.ledger.reserve(self.price.estimate(request, self.default_max_tokens), model=self.inner.name)
        try:
            async for chunk in self.inner.stream(request):
                if chunk.done:
                    self.ledger.settle(r, chunk.cost_usd)
                yield chunk
        finally:
            if not r.settled:  # cut short: bill the estimate, the provider may have generated it
                self.ledger.settle(r, r.amount)
