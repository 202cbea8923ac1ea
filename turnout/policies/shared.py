"""Budgets and rate limits shared by every process on one Redis (``pip install 'turnout[redis]'``).

``RedisAccounts`` is the ``Accounts`` backend of ``turnout.policies.ledger`` and ``RedisBuckets``
the ``Buckets`` backend of ``turnout.policies.ratelimit``: the same ledgers and token buckets, with
their balances in Redis hashes and every check-and-take in one Lua script, so any number of gateway
replicas (or batch processes) hold one limit together. ``open_shared(url)`` gives both on one
connection pool.
"""

from __future__ import annotations

import math
from typing import Any

from .._errors import ConfigError

__all__ = ["RedisAccounts", "RedisBuckets", "open_shared", "redis_client"]

_TAKE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[3], 'reserved', 0, 'calls', 0)
  if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved'))
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if spent + reserved + amount > limit + 1e-12 then return {0, tostring(spent), tostring(reserved)} end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', amount)
return {1, tostring(spent), tostring(reserved)}
"""

_GIVE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'0', '0', '0'} end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', -tonumber(ARGV[1]))
if ARGV[2] ~= '' then
  redis.call('HINCRBYFLOAT', KEYS[1], 'spent', tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[1], 'calls', 1)
end
return redis.call('HMGET', KEYS[1], 'spent', 'reserved', 'calls')
"""

# a token bucket: 't' tokens at time 'last' (the callers' wall clock), refilled at 'rate' up to 'cap'
_BUCKET_LUA = """
local n, rate, cap, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = tonumber(redis.call('HGET', KEYS[1], 't'))
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
if t == nil then t, last = cap, now end
if now > last then t = t + (now - last) * rate; last = now end
if t > cap then t = cap end
local wait = 0
if ARGV[5] == 'take' then
  t = t - n
  if t < 0 then wait = -t / rate end
elseif ARGV[5] == 'try' then
  if t >= n then t = t - n else wait = (n - t) / rate end
elseif ARGV[5] == 'give' then
  t = t + n
  if t > cap then t = cap end
end
redis.call('HSET', KEYS[1], 't', tostring(t), 'last', tostring(last))
redis.call('EXPIRE', KEYS[1], math.ceil(cap / rate) + 60)
if ARGV[5] == 'level' then return tostring(t) end
return tostring(wait)
"""


def redis_client(url: str) -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigError("Redis (shared limits, the shared cache) needs the redis client: pip install 'turnout[redis]'") from None
    return aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


class RedisAccounts:
    """Ledger balances in Redis hashes ``{prefix}:{account}``; take and give are each one Lua call."""

    def __init__(self, url: str | None = None, *, client: Any = None, prefix: str = "turnout") -> None:
        self.r = client if client is not None else redis_client(url or "")
        self.prefix = prefix
        self._take = self.r.register_script(_TAKE_LUA)
        self._give = self.r.register_script(_GIVE_LUA)

    async def take(self, account: str, amount: float, limit: float, *, seed: float = 0.0,
                   ttl: float = 0.0) -> tuple[Any, float, float]:
        k = f"{self.prefix}:{account}"
        ok, spent, reserved = await self._take(keys=[k], args=[repr(amount), repr(limit), repr(seed), math.ceil(ttl)])
        return ((k, amount) if int(ok) == 1 else None), float(spent), float(reserved)

    async def give(self, token: Any, actual: float | None) -> tuple[float, float, int]:
        k, amount = token
        spent, reserved, calls = await self._give(keys=[k], args=[repr(amount), "" if actual is None else repr(actual)])
        return float(spent or 0), float(reserved or 0), int(calls or 0)

    async def exists(self, account: str) -> bool:
        return bool(await self.r.exists(f"{self.prefix}:{account}"))

    async def balance(self, account: str) -> tuple[float, float, int]:
        spent, reserved, calls = await self.r.hmget(f"{self.prefix}:{account}", "spent", "reserved", "calls")
        return float(spent or 0), float(reserved or 0), int(calls or 0)

    async def aclose(self) -> None:
        await self.r.aclose()


class RedisBuckets:
    """Token buckets in Redis hashes ``{prefix}:{bucket}``; each take or give is one Lua call."""

    def __init__(self, url: str | None = None, *, client: Any = None, prefix: str = "turnout") -> None:
        self.r = client if client is not None else redis_client(url or "")
        self.prefix = prefix
        self._bucket = self.r.register_script(_BUCKET_LUA)

    async def take(self, bucket: str, n: float, rate: float, capacity: float, now: float, *, wait: bool) -> float:
        res = await self._bucket(keys=[f"{self.prefix}:{bucket}"], args=[repr(n), repr(rate), repr(capacity), repr(now),
                                                                          "take" if wait else "try"])
        return float(res)

    async def give(self, bucket: str, n: float, rate: float, capacity: float, now: float) -> None:
        await self._bucket(keys=[f"{self.prefix}:{bucket}"], args=[repr(n), repr(rate), repr(capacity), repr(now), "give"])

    async def level(self, bucket: str, rate: float, capacity: float, now: float) -> float:
        """The tokens in the bucket now (refilled; nothing taken): one Lua call."""
        res = await self._bucket(keys=[f"{self.prefix}:{bucket}"], args=["0", repr(rate), repr(capacity), repr(now), "level"])
        return float(res)

    async def aclose(self) -> None:
        await self.r.aclose()


def open_shared(url: str, *, prefix: str = "turnout") -> tuple[RedisAccounts, RedisBuckets]:
    """Accounts and buckets on one Redis client (close either: they share it)."""
    r = redis_client(url)
    return RedisAccounts(client=r, prefix=prefix), RedisBuckets(client=r, prefix=prefix)
