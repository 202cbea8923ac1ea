"""Virtual API keys for the gateway: random secrets shown once, stored as sha256 hashes in the trace
store (migration 8), each with the models and workflows it may use (least privilege: nothing is
implied), request and token rates, and a budget (USD, optionally per period).

Keys are high-entropy random tokens (256 bits), so a fast hash is the right tool (as for GitHub or
Stripe tokens): there is nothing to brute-force. Lookups are cached for ``ttl`` seconds so the hot
path does not touch the database; a revoked key stops working within ``ttl``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError
from ..policies.cache import CacheSettings
from ..store.base import KeyTable

__all__ = ["ApiKey", "KeyRing", "hash_secret"]

PREFIX = "tk-"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _allows(patterns: tuple[str, ...], name: str) -> bool:
    return any(p == "*" or p == name or (p.endswith("*") and name.startswith(p[:-1])) for p in patterns)


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    models: tuple[str, ...] = ()
    workflows: tuple[str, ...] = ()
    rpm: float | None = None
    tpm: float | None = None
    budget_usd: float | None = None
    period: str | None = None
    team: str | None = None
    created_at: float = 0.0
    revoked_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cache: CacheSettings | None = None  # response-cache opt-in for its calls: ttl, semantic, sampled

    def may_use_model(self, name: str) -> bool:
        return _allows(self.models, name)

    def may_run_workflow(self, name: str) -> bool:
        return _allows(self.workflows, name)

    @staticmethod
    def from_row(r: dict[str, Any]) -> ApiKey:
        return ApiKey(r["key_id"], r["name"], tuple(r["models"]), tuple(r["workflows"]), r["rpm"], r["tpm"], r["budget_usd"],
                      r["period"], r["team"], r["created_at"], r["revoked_at"], cache=CacheSettings.of(r.get("cache")))


class KeyRing:
    def __init__(self, store: KeyTable, *, ttl: float = 5.0) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    def create(self, name: str, *, models: list[str] | tuple[str, ...] = (), workflows: list[str] | tuple[str, ...] = (),
               rpm: float | None = None, tpm: float | None = None, budget_usd: float | None = None, period: str | None = None,
               team: str | None = None, cache: dict[str, Any] | None = None) -> tuple[str, ApiKey]:
        """A new key; returns ``(secret, key)``. The secret is not stored and cannot be shown again."""
        if not name or not name.strip():
            raise ConfigError("a key needs a name")
        if not models and not workflows:
            raise ConfigError(f"key {name!r}: give it the models and/or workflows it may use (--model / --workflow; '*' = all)")
        for label, v in (("rpm", rpm), ("tpm", tpm), ("budget", budget_usd)):
            if v is not None and v <= 0:
                raise ConfigError(f"key {name!r}: {label} must be > 0, got {v}")
        if period is not None and period not in ("hour", "day", "week", "month"):
            raise ConfigError(f"key {name!r}: period must be hour, day, week or month, not {period!r}")
        st = CacheSettings.of(cache, f"key {name!r}: cache")
        secret = PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(6)
        row = {"key_id": key_id, "name": name, "hash": hash_secret(secret), "models": list(models), "workflows": list(workflows),
               "rpm": rpm, "tpm": tpm, "budget_usd": budget_usd, "period": period, "team": team, "created_at": time.time(),
               "revoked_at": None, "cache": st._asdict() if st is not None else None}
        self.store.key_insert(row)
        return secret, ApiKey.from_row(row)

    def list(self) -> list[ApiKey]:
        return [ApiKey.from_row(r) for r in self.store.api_keys()]

    def revoke(self, key_id_or_name: str) -> bool:
        ok = bool(self.store.key_revoke(key_id_or_name))
        self._cache.clear()
        return ok

    def _cached(self, secret: str | None) -> tuple[str | None, ApiKey | None, bool]:
        """(hash, key, hit): hash None for a malformed secret."""
        if not secret or not secret.startswith(PREFIX) or len(secret) > 200:
            return None, None, True
        h = hash_secret(secret)
        hit = self._cache.get(h)
        if hit is not None and hit[0] > time.monotonic():
            return h, hit[1], True
        return h, None, False

    def _remember(self, h: str, row: dict[str, Any] | None) -> ApiKey | None:
        key = ApiKey.from_row(row) if row is not None and row["revoked_at"] is None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[h] = (time.monotonic() + self.ttl, key)
        return key

    def authenticate(self, secret: str | None) -> ApiKey | None:
        """The live key for this secret, or None (unknown, malformed or revoked)."""
        h, key, hit = self._cached(secret)
        if hit or h is None:
            return key
        return self._remember(h, self.store.key_by_hash(h))

    async def aauthenticate(self, secret: str | None) -> ApiKey | None:
        """``authenticate`` for an event loop: a cache miss reads the store in a thread."""
        h, key, hit = self._cached(secret)
        if hit or h is None:
            return key
        return self._remember(h, await asyncio.to_thread(self.store.key_by_hash, h))
