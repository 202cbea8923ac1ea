"""The response cache's entries kept in the store (``StoreCache`` in ``turnout.policies.cache``): one
row per (namespace, key), written at once, with its expiry; expired rows are skipped on read and
purged on write. A mixin of the store classes; it relies on their ``_now()``. Entries are JSON
text the cache wrote; a store opened with ``redact=True`` keeps no answer texts, so it keeps no
cache either (``cache_put`` refuses)."""

from __future__ import annotations

import time
from typing import Any

from .._errors import ConfigError

__all__ = ["CacheTables"]


class CacheTables:
    redact: bool

    def _now(self, sql: str, args: tuple[Any, ...], *, fetch: bool = False) -> list[Any]:  # pragma: no cover - the store's
        raise NotImplementedError

    def cache_get(self, ns: str, key: str) -> str | None:
        """The live entry for (ns, key), or None (absent or expired)."""
        rows = self._now("SELECT entry FROM response_cache WHERE ns = ? AND key = ? AND expires_at > ?", (ns, key, time.time()),
                         fetch=True)
        return rows[0][0] if rows else None

    def cache_put(self, ns: str, key: str, entry: str, ttl: float) -> None:
        if self.redact:
            raise ConfigError("this store redacts texts (--redact / TURNOUT_REDACT), so it cannot keep cached answers: "
                              "use the memory or Redis cache")
        now = time.time()
        self._now("INSERT INTO response_cache (ns, key, entry, created_at, expires_at) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT (ns, key) DO UPDATE SET entry = excluded.entry, created_at = excluded.created_at, "
                  "expires_at = excluded.expires_at", (ns, key, entry, now, now + ttl))

    def cache_purge(self, *, expired_only: bool = True) -> int:
        """Delete the expired entries (or all of them); returns how many were there."""
        cond, args = ("WHERE expires_at <= ?", (time.time(),)) if expired_only else ("", ())
        n = self._now(f"SELECT COUNT(*) FROM response_cache {cond}", args, fetch=True)[0][0]
        self._now(f"DELETE FROM response_cache {cond}", args)
        return int(n)
