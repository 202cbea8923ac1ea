"""A gateway key's rates and budget, in one process or shared by replicas — the same ``Limiter`` and
``Ledger`` as everything else in turnout (``turnout.policies``), over memory or Redis.

- Rates: the key's ``rpm`` / ``tpm`` are token buckets holding a minute's worth (``RateLimiter``
  with ``admit``): over the limit the request gets 429 with ``Retry-After`` = seconds until it fits.
- Budgets: every model call made for a key — a plain model, ``turnout/auto``, each call of a
  workflow — reserves its worst-case cost on the key and settles the real cost after:
  ``meter(key)`` (a ``SpendControl`` with the key's one budget) is put in the request's spend
  scope and ``Budgeted`` (in every catalog model's stack) charges it. Over the limit a call raises
  ``BudgetExceeded`` (HTTP 429 ``budget_exceeded``). A period budget's window is the calendar
  period in UTC, and a fresh process starts it from the spend the trace store recorded for that
  key in the period (read in a thread, never on the event loop).

``open_limits(None)`` keeps the balances in memory (one server process); ``open_limits(url)`` in
Redis (``TURNOUT_REDIS_URL``), so any number of replicas share one limit per key.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from .._errors import LimitExceeded
from ..policies.ledger import MemoryAccounts
from ..policies.ratelimit import MemoryBuckets, RateLimiter
from ..policies.spend import Budget, SpendControl
from .access import note
from .keys import ApiKey

if TYPE_CHECKING:
    from ..store.base import RunReader

__all__ = ["KeyLimits", "LimitExceeded", "open_limits", "retry_after_header"]


class KeyLimits:
    """Per-key limiters and budgets on ``accounts`` and ``buckets`` (memory unless given)."""

    def __init__(self, store: RunReader | None = None, *, accounts: Any = None, buckets: Any = None, clock: Any = time.time) -> None:
        self.store, self.clock = store, clock
        self.shared = accounts is not None
        self.accounts = accounts if accounts is not None else MemoryAccounts()
        self.buckets = buckets if buckets is not None else MemoryBuckets()
        self._limiters: dict[tuple[str, float | None, float | None], RateLimiter] = {}
        self._meters: dict[tuple[str, float | None, str | None], SpendControl] = {}

    async def admit(self, key: ApiKey, tokens: int) -> None:
        """Take one request and ``tokens`` from the key's rate, or raise ``LimitExceeded`` (taking nothing)."""
        lim = self._limiter(key)
        if lim is None:
            return
        refused = await lim.admit(tokens)
        note(ratelimit=await lim.remaining())  # the x-ratelimit-* headers of this response, refused or not
        if refused is not None:
            what, wait = refused
            limit = key.rpm if what == "requests" else key.tpm
            raise LimitExceeded(f"rate limit of {limit:g} {what}/min reached for key {key.name!r}", kind="rate", retry_after=wait)

    def _limiter(self, key: ApiKey) -> RateLimiter | None:
        if key.rpm is None and key.tpm is None:
            return None
        k = (key.key_id, key.rpm, key.tpm)
        lim = self._limiters.get(k)
        if lim is None:
            lim = self._limiters[k] = RateLimiter(rpm=key.rpm, tpm=key.tpm, burst=key.rpm, token_burst=key.tpm,
                                                  buckets=self.buckets, clock=self.clock, name=f"rate:key:{key.key_id}")
        return lim

    async def remaining(self, key: ApiKey) -> dict[str, tuple[float, float, float]]:
        """The key's rates now (``RateLimiter.remaining``); empty for a key without limits."""
        lim = self._limiter(key)
        return await lim.remaining() if lim is not None else {}

    def meters(self) -> list[SpendControl]:
        """The key budgets this process has used (their ledgers are in memory or in Redis)."""
        return list(self._meters.values())

    def meter(self, key: ApiKey) -> SpendControl | None:
        """The key's budget as a ledger of the request's spend scope (None: the key has no budget)."""
        if key.budget_usd is None:
            return None
        k = (key.key_id, key.budget_usd, key.period)
        m = self._meters.get(k)
        if m is None:
            b = Budget(key.budget_usd, "key", key.key_id, key.period, alerts=(),  # type: ignore[arg-type]
                       name=f"key {key.name}{' per ' + key.period if key.period else ''}")
            m = self._meters[k] = SpendControl([b], store=self.store, accounts=self.accounts, clock=self.clock, bind={"key": key.key_id})
        return m

    async def spent(self, key: ApiKey) -> float:
        """The key's spend in its current budget window, as the ledger holds it (0 without a budget)."""
        m = self.meter(key)
        if m is None:
            return 0.0
        await m.release(await m.reserve(0.0))  # opens (and seeds) the window's ledger
        return sum(s.spent_usd for s in await m.status())

    async def ping(self) -> str | None:
        """None, or why the shared limits are unreachable (``/readyz``)."""
        r = getattr(self.accounts, "r", None)
        if r is None:
            return None
        try:
            await r.ping()
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            return f"redis unreachable ({type(e).__name__})"
        return None

    async def aclose(self) -> None:
        close = getattr(self.accounts, "aclose", None)
        if close is not None:
            await close()


def open_limits(redis_url: str | None, store: RunReader | None = None) -> KeyLimits:
    if not redis_url:
        return KeyLimits(store)
    from ..policies.shared import open_shared

    accounts, buckets = open_shared(redis_url)
    return KeyLimits(store, accounts=accounts, buckets=buckets)


def retry_after_header(seconds: float | None) -> str:
    return str(max(1, math.ceil(seconds or 1)))
