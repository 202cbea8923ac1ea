"""Where the response cache keeps its entries (``turnout.policies.cache``): entries are JSON text
by (namespace, key), each with a time to live.

- ``MemoryCache``: one process, LRU bounded by ``max_entries``, expiry checked on read.
- ``StoreCache``: the trace store's ``response_cache`` table (SQLite or PostgreSQL), read and
  written in a thread (never on the event loop); survives restarts, shared by every process on
  the store. Not for a store that redacts texts.
- ``RedisCache``: ``SET key value EX ttl`` on Redis, shared by every gateway replica
  (``pip install 'turnout[redis]'``).

``open_cache("memory" | "store" | "redis://...")`` builds one from a catalog's ``cache:`` section.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import Any, Protocol

from .._errors import ConfigError

__all__ = ["CacheBackend", "MemoryCache", "RedisCache", "StoreCache", "open_backend"]


class CacheBackend(Protocol):
    async def get(self, ns: str, key: str) -> str | None: ...

    async def put(self, ns: str, key: str, entry: str, ttl: float) -> None: ...

    async def aclose(self) -> None: ...


class MemoryCache:
    """LRU of at most ``max_entries`` entries in this process; an expired entry is a miss."""

    def __init__(self, max_entries: int = 10_000, *, clock: Any = time.monotonic) -> None:
        if max_entries < 1:
            raise ConfigError(f"cache max_entries must be >= 1, got {max_entries}")
        self.max_entries, self.clock = max_entries, clock
        self._d: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def __repr__(self) -> str:
        return f"MemoryCache({len(self._d)}/{self.max_entries})"

    def __len__(self) -> int:
        return len(self._d)

    async def get(self, ns: str, key: str) -> str | None:
        k = (ns, key)
        v = self._d.get(k)
        if v is None:
            return None
        if v[0] <= self.clock():
            del self._d[k]
            return None
        self._d.move_to_end(k)
        return v[1]

    async def put(self, ns: str, key: str, entry: str, ttl: float) -> None:
        k = (ns, key)
        self._d[k] = (self.clock() + ttl, entry)
        self._d.move_to_end(k)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()

    async def aclose(self) -> None:
        pass


class StoreCache:
    """Entries in the trace store (``store``, or ``open_store(url)`` on first use: the default
    store without a url); expired rows are purged every ``purge_every`` writes."""

    def __init__(self, store: Any = None, *, url: str | None = None, purge_every: int = 1000) -> None:
        self._store, self.url, self.purge_every = store, url, purge_every
        self._writes = 0

    def __repr__(self) -> str:
        return f"StoreCache({self._store!r})" if self._store is not None else f"StoreCache(url={self.url!r})"

    def bind(self, store: Any) -> None:
        """Use ``store`` (the gateway's) unless one was given or opened already."""
        if self._store is None and self.url is None:
            self._store = store

    @property
    def store(self) -> Any:
        if self._store is None:
            from ..store import open_store

            self._store = open_store(self.url)
            if self._store.redact:
                raise ConfigError("the cache's store redacts texts (TURNOUT_REDACT): it cannot keep answers; use memory or redis")
        return self._store

    async def get(self, ns: str, key: str) -> str | None:
        return await asyncio.to_thread(self.store.cache_get, ns, key)

    async def put(self, ns: str, key: str, entry: str, ttl: float) -> None:
        await asyncio.to_thread(self.store.cache_put, ns, key, entry, ttl)
        self._writes += 1
        if self._writes % self.purge_every == 0:
            await asyncio.to_thread(self.store.cache_purge)

    async def aclose(self) -> None:
        pass  # the store belongs to whoever opened it (or to the process, opened from a url)


class RedisCache:
    """Entries as Redis strings ``{prefix}:cache:{sha256(ns)[:16]}:{key}`` with ``EX ttl``."""

    def __init__(self, url: str | None = None, *, client: Any = None, prefix: str = "turnout") -> None:
        if client is None:
            from .shared import redis_client

            client = redis_client(url or "")
        self.r, self.prefix = client, prefix
        self._owned = url is not None

    def __repr__(self) -> str:
        return f"RedisCache(prefix={self.prefix!r})"

    def _k(self, ns: str, key: str) -> str:
        return f"{self.prefix}:cache:{hashlib.sha256(ns.encode()).hexdigest()[:16]}:{key}"

    async def get(self, ns: str, key: str) -> str | None:
        v = await self.r.get(self._k(ns, key))
        return v.decode() if isinstance(v, bytes) else v

    async def put(self, ns: str, key: str, entry: str, ttl: float) -> None:
        await self.r.set(self._k(ns, key), entry, px=max(1, int(ttl * 1000)))

    async def aclose(self) -> None:
        if self._owned:
            await self.r.aclose()


def open_backend(spec: str | None, *, max_entries: int = 10_000, store: Any = None) -> CacheBackend:
    """``memory`` (default), ``store`` (the trace store; ``store=`` or the default one) or a
    ``redis://`` URL."""
    s = (spec or "memory").strip()
    if s == "memory":
        return MemoryCache(max_entries)
    if s == "store":
        return StoreCache(store)
    if s.startswith(("redis://", "rediss://", "unix://")):
        return RedisCache(s)
    if s.startswith(("postgresql://", "postgres://", "sqlite:")) or s.endswith(".db"):
        return StoreCache(url=s.removeprefix("sqlite:"))
    raise ConfigError(f"cache backend {s!r}: use memory, store, a store URL or path, or a redis:// URL")
