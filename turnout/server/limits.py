"""Per-key request/token rates and budgets for the gateway, in one process or shared by replicas.

- Rates: a fixed one-minute window per key (requests, and estimated tokens); over the limit the
  request gets 429 with ``Retry-After`` = seconds to the next window.
- Budgets: every model call made for a key — a plain model, ``turnout/auto``, each call of a
  workflow — reserves its worst-case cost on the key and settles the real cost after (the
  ``BudgetLedger`` protocol, made async): ``meter(key)`` is put in the request's spend scope and
  ``Budgeted`` (in every catalog model's stack) charges it. Over the limit a call raises
  ``BudgetExceeded`` (HTTP 429 ``budget_exceeded``). A period budget's window is the calendar
  period in UTC, and a fresh process starts it from the spend the trace store recorded for that
  key in the period (read in a thread, never on the event loop).

``LocalLimits`` keeps the counters in memory (one server process). ``RedisLimits`` keeps them in
Redis with Lua scripts that check and reserve atomically, so any number of gateway replicas share
one limit (``TURNOUT_REDIS_URL``).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .._errors import BudgetExceeded, LimitExceeded
from .._types import period_start
from .keys import ApiKey

__all__ = ["KeyMeter", "LimitExceeded", "LocalLimits", "RedisLimits", "open_limits"]


@dataclass(slots=True)
class Hold:
    key_id: str
    window: str
    amount: float
    done: bool = False


def _minute(now: float) -> tuple[int, float]:
    m = int(now // 60)
    return m, (m + 1) * 60 - now


def _budget_window(key: ApiKey, now: float) -> str:
    return f"{key.period}:{int(period_start(key.period, now))}" if key.period else "total"


def _over(key: ApiKey, spent: float, reserved: float, amount: float) -> BudgetExceeded:
    return BudgetExceeded(limit=key.budget_usd or 0.0, spent=spent, reserved=reserved, requested=amount,
                          name=f"key {key.name}{' per ' + key.period if key.period else ''}")


async def _recorded(store: Any, key: ApiKey, now: float) -> float:
    """The key's spend in its current period from the trace store, read in a thread; 0 if unreachable."""
    if store is None:
        return 0.0
    since = period_start(key.period, now) if key.period else None
    try:
        return float(await asyncio.to_thread(store.spend, since=since, key=key.key_id))
    except Exception:  # noqa: BLE001 - an unreachable store must not block the gateway
        return 0.0


class KeyMeter:
    """A key's budget as a meter of the spend scope (``turnout._scope``): each model call reserves on
    it before it is made and settles after."""

    __slots__ = ("key", "limits")

    def __init__(self, limits: Any, key: ApiKey) -> None:
        self.limits, self.key = limits, key

    async def reserve(self, amount: float, *, model: str = "") -> Hold | None:
        return await self.limits.reserve(self.key, amount)  # type: ignore[no-any-return]

    async def settle(self, hold: Hold | None, actual: float) -> None:
        await self.limits.settle(self.key, hold, actual)


class _Limits:
    def meter(self, key: ApiKey) -> KeyMeter | None:
        """The key's budget as a spend-scope meter (None: the key has no budget)."""
        return KeyMeter(self, key) if key.budget_usd is not None else None


class LocalLimits(_Limits):
    def __init__(self, store: Any = None, *, clock: Any = time.time) -> None:
        self.store, self.clock = store, clock
        self._rate: dict[tuple[str, int], list[float]] = {}  # (key, minute) -> [requests, tokens]
        self._budget: dict[tuple[str, str], list[float]] = {}  # (key, window) -> [spent, reserved]

    async def admit(self, key: ApiKey, tokens: int) -> None:
        if key.rpm is None and key.tpm is None:
            return
        minute, left = _minute(self.clock())
        c = self._rate.get((key.key_id, minute))
        if c is None:
            self._rate = {k: v for k, v in self._rate.items() if k[1] >= minute}  # drop old windows
            c = self._rate[(key.key_id, minute)] = [0.0, 0.0]
        if key.rpm is not None and c[0] + 1 > key.rpm:
            raise LimitExceeded(f"rate limit of {key.rpm:g} requests/min reached for key {key.name!r}", kind="rate", retry_after=left)
        if key.tpm is not None and c[1] + tokens > key.tpm:
            raise LimitExceeded(f"rate limit of {key.tpm:g} tokens/min reached for key {key.name!r}", kind="rate", retry_after=left)
        c[0] += 1
        c[1] += tokens

    async def _ledger(self, key: ApiKey, window: str) -> list[float]:
        led = self._budget.get((key.key_id, window))
        if led is None:
            spent = await _recorded(self.store, key, self.clock())
            led = self._budget.setdefault((key.key_id, window), [spent, 0.0])  # another request may have seeded it meanwhile
        return led

    async def reserve(self, key: ApiKey, amount: float) -> Hold | None:
        if key.budget_usd is None:
            return None
        window = _budget_window(key, self.clock())
        led = await self._ledger(key, window)
        if led[0] + led[1] + amount > key.budget_usd + 1e-12:
            raise _over(key, led[0], led[1], amount)
        led[1] += amount
        return Hold(key.key_id, window, amount)

    async def settle(self, key: ApiKey, hold: Hold | None, actual: float) -> None:
        if hold is None or hold.done:
            return
        hold.done = True
        led = self._budget.get((hold.key_id, hold.window))
        if led is not None:
            led[1] -= hold.amount
            led[0] += actual

    async def spent(self, key: ApiKey) -> float:
        return (await self._ledger(key, _budget_window(key, self.clock())))[0] if key.budget_usd is not None else 0.0

    async def aclose(self) -> None:
        return None


_RATE_LUA = """
local n = redis.call('HINCRBY', KEYS[1], 'n', 0)
local t = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], 't', 0))
local rpm, tpm, tok = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if rpm >= 0 and n + 1 > rpm then return 1 end
if tpm >= 0 and t + tok > tpm then return 2 end
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HINCRBYFLOAT', KEYS[1], 't', tok)
redis.call('EXPIRE', KEYS[1], 120)
return 0
"""

_RESERVE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[3], 'reserved', 0)
  if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved'))
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if spent + reserved + amount > limit + 1e-12 then return {0, tostring(spent), tostring(reserved)} end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', amount)
return {1, tostring(spent), tostring(reserved)}
"""

_SETTLE_LUA = """
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', -tonumber(ARGV[1]))
redis.call('HINCRBYFLOAT', KEYS[1], 'spent', tonumber(ARGV[2]))
return 1
"""


class RedisLimits(_Limits):
    """The same limits in Redis, shared by every gateway replica (``pip install 'turnout[redis]'``)."""

    def __init__(self, url: str, store: Any = None, *, prefix: str = "turnout", clock: Any = time.time) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            from .._errors import ConfigError

            raise ConfigError("TURNOUT_REDIS_URL needs the redis client: pip install 'turnout[redis]'") from None
        self.r = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.store, self.prefix, self.clock = store, prefix, clock
        self._rate = self.r.register_script(_RATE_LUA)
        self._reserve = self.r.register_script(_RESERVE_LUA)
        self._settle = self.r.register_script(_SETTLE_LUA)
        self.instance = uuid.uuid4().hex[:8]

    async def admit(self, key: ApiKey, tokens: int) -> None:
        if key.rpm is None and key.tpm is None:
            return
        minute, left = _minute(self.clock())
        res = await self._rate(keys=[f"{self.prefix}:rate:{key.key_id}:{minute}"],
                               args=[-1 if key.rpm is None else key.rpm, -1 if key.tpm is None else key.tpm, tokens])
        if int(res) == 1:
            raise LimitExceeded(f"rate limit of {key.rpm:g} requests/min reached for key {key.name!r}", kind="rate", retry_after=left)
        if int(res) == 2:
            raise LimitExceeded(f"rate limit of {key.tpm:g} tokens/min reached for key {key.name!r}", kind="rate", retry_after=left)

    async def reserve(self, key: ApiKey, amount: float) -> Hold | None:
        if key.budget_usd is None:
            return None
        window = _budget_window(key, self.clock())
        rkey = f"{self.prefix}:budget:{key.key_id}:{window}"
        ttl = 0 if not key.period else int({"hour": 3600, "day": 86400, "week": 604800, "month": 2764800}[key.period] * 1.5)
        seed = await _recorded(self.store, key, self.clock()) if not await self.r.exists(rkey) else 0.0
        ok, spent, reserved = await self._reserve(keys=[rkey], args=[amount, key.budget_usd, seed, ttl])
        if int(ok) != 1:
            raise _over(key, float(spent), float(reserved), amount)
        return Hold(key.key_id, window, amount)

    async def settle(self, key: ApiKey, hold: Hold | None, actual: float) -> None:
        if hold is None or hold.done:
            return
        hold.done = True
        await self._settle(keys=[f"{self.prefix}:budget:{hold.key_id}:{hold.window}"], args=[hold.amount, actual])

    async def spent(self, key: ApiKey) -> float:
        if key.budget_usd is None:
            return 0.0
        v = await self.r.hget(f"{self.prefix}:budget:{key.key_id}:{_budget_window(key, self.clock())}", "spent")
        return float(v) if v is not None else 0.0

    async def aclose(self) -> None:
        await self.r.aclose()


def open_limits(redis_url: str | None, store: Any = None) -> LocalLimits | RedisLimits:
    return RedisLimits(redis_url, store) if redis_url else LocalLimits(store)


def retry_after_header(seconds: float | None) -> str:
    return str(max(1, math.ceil(seconds or 1)))
