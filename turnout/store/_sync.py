"""The store's tables that are written at once rather than queued: the batch ledger (a finished
item must survive kill -9) and the gateway's API keys (a created key must work at once). A mixin
of the store classes; it relies on their ``_reading()``, ``_lock`` and ``_now()``."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .._errors import ConfigError

__all__ = ["SyncTables"]


class SyncTables:
    _lock: Any

    def _reading(self) -> Any:  # pragma: no cover - provided by the store
        raise NotImplementedError

    def _now(self, sql: str, args: tuple[Any, ...], *, fetch: bool = False) -> list[Any]:  # pragma: no cover - the store's
        raise NotImplementedError

    # -- the batch ledger ---------------------------------------------------------------------------
    def ledger_open(self, batch_id: str, *, workflow: str, source: str, total: int) -> dict[str, dict[str, Any]]:
        """Register a batch (or find it again) and return what is known of its items by key."""
        self._reading()
        if not self._now("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,), fetch=True):
            self._now("INSERT INTO batches (batch_id, workflow, source, created_at, total) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (batch_id) DO NOTHING", (batch_id, workflow, source, time.time(), total))
        cols = ("item_key", "line", "status", "run_id", "output", "error", "cost_usd", "latency_s", "attempts")
        rows = self._now(f"SELECT {', '.join(cols)} FROM batch_items WHERE batch_id = ?", (batch_id,), fetch=True)
        return {r[0]: dict(zip(cols, r, strict=True)) for r in rows}

    def ledger_record(self, batch_id: str, key: str, *, line: int, status: str, run_id: str | None = None, output: str | None = None,
                      error: str | None = None, cost_usd: float = 0.0, latency_s: float = 0.0) -> None:
        """An item's state (``running``, ``done``, ``error``), committed before this returns."""
        self._now(
            "INSERT INTO batch_items (batch_id, item_key, line, status, run_id, output, error, cost_usd, latency_s, attempts, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) ON CONFLICT (batch_id, item_key) DO UPDATE SET status = excluded.status, "
            "run_id = COALESCE(excluded.run_id, batch_items.run_id), output = excluded.output, error = excluded.error, "
            "cost_usd = batch_items.cost_usd + excluded.cost_usd, latency_s = excluded.latency_s, updated_at = excluded.updated_at, "
            "attempts = batch_items.attempts + CASE WHEN excluded.status = 'running' THEN 1 ELSE 0 END",
            (batch_id, key, line, status, run_id, output, error, cost_usd, latency_s, time.time()),
        )

    def ledger_items(self, batch_id: str) -> list[dict[str, Any]]:
        self._reading()
        cols = ("item_key", "line", "status", "run_id", "output", "error", "cost_usd", "latency_s", "attempts")
        rows = self._now(f"SELECT {', '.join(cols)} FROM batch_items WHERE batch_id = ? ORDER BY line", (batch_id,), fetch=True)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    # -- batch leases: one runner per batch at a time --------------------------------------------------
    _LEASE_COLS = ("owner", "owner_host", "owner_pid", "heartbeat")

    def lease_take(self, batch_id: str, owner: str, *, host: str, pid: int, stale_s: float,
                   dead_owner: str | None = None) -> dict[str, Any] | None:
        """Take a registered batch's lease for ``owner`` if it is free, already ours, silent for
        ``stale_s`` seconds, or held by ``dead_owner`` (a runner known to be gone). One statement,
        so of two runners racing for it exactly one wins. None when taken; else the holder's row."""
        now = time.time()
        self._now("UPDATE batches SET owner = ?, owner_host = ?, owner_pid = ?, heartbeat = ? WHERE batch_id = ? AND "
                  "(owner IS NULL OR owner = ? OR heartbeat < ? OR owner = ?)",
                  (owner, host, pid, now, batch_id, owner, now - stale_s, dead_owner or owner))
        rows = self._now(f"SELECT {', '.join(self._LEASE_COLS)} FROM batches WHERE batch_id = ?", (batch_id,), fetch=True)
        if not rows:
            raise ConfigError(f"batch {batch_id!r} is not registered in this store")
        holder = dict(zip(self._LEASE_COLS, rows[0], strict=True))
        return None if holder["owner"] == owner else holder

    def lease_beat(self, batch_id: str, owner: str) -> None:
        self._now("UPDATE batches SET heartbeat = ? WHERE batch_id = ? AND owner = ?", (time.time(), batch_id, owner))

    def lease_release(self, batch_id: str, owner: str) -> None:
        self._now("UPDATE batches SET owner = NULL, owner_host = NULL, owner_pid = NULL, heartbeat = NULL "
                  "WHERE batch_id = ? AND owner = ?", (batch_id, owner))

    # -- gateway API keys (only hashes are stored) -------------------------------------------------------
    _KEY_COLS = ("key_id", "name", "hash", "models", "workflows", "rpm", "tpm", "budget_usd", "period", "team", "created_at",
                 "revoked_at", "cache")

    def key_insert(self, row: Mapping[str, Any]) -> None:
        db = self._reading()
        if db.execute("SELECT 1 FROM api_keys WHERE name = ?", (row["name"],)).fetchone() is not None:
            raise ConfigError(f"a key named {row['name']!r} already exists (revoke it first, or choose another name)")
        cols = [c for c in self._KEY_COLS if c in row]
        vals = tuple(json.dumps(list(row[c])) if c in ("models", "workflows") else
                     (json.dumps(row[c]) if c == "cache" and row[c] is not None else row[c]) for c in cols)
        self._now(f"INSERT INTO api_keys ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", vals)

    def _key_rows(self, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        self._reading()
        rows = self._now(f"SELECT {', '.join(self._KEY_COLS)} FROM api_keys {where}", args, fetch=True)
        out = []
        for r in rows:
            d = dict(zip(self._KEY_COLS, r, strict=True))
            d["models"], d["workflows"] = json.loads(d["models"]), json.loads(d["workflows"])
            d["cache"] = json.loads(d["cache"]) if d["cache"] else None
            out.append(d)
        return out

    def key_by_hash(self, digest: str) -> dict[str, Any] | None:
        rows = self._key_rows("WHERE hash = ?", (digest,))
        return rows[0] if rows else None

    def api_keys(self) -> list[dict[str, Any]]:
        return self._key_rows("ORDER BY created_at", ())

    def key_revoke(self, key_id_or_name: str) -> bool:
        rows = self._key_rows("WHERE (key_id = ? OR name = ?) AND revoked_at IS NULL", (key_id_or_name, key_id_or_name))
        if not rows:
            return False
        self._now("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", (time.time(), rows[0]["key_id"]))
        return True

