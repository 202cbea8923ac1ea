"""The escalation queue and the runs waiting on it, written at once (a kill -9 between escalation
and resolution loses nothing): a mixin of the store classes, on their ``_reading()``, ``_lock``,
``_db`` and ``dialect``.

An item is ``open`` (anyone may claim or resolve it), ``claimed`` (by one person until
``claim_until``; a lapsed claim makes it open again), ``resolved`` (once: a second resolution is
refused) or ``expired`` (past ``expires_at`` unresolved). Every change is one conditional
statement, so of two people racing for an item exactly one wins. A waiting run's state (its
journal: the outputs of the steps done) sits in ``suspended_runs`` until the run resumes; taking
it to resume is a lease, so two processes never resume one run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .._errors import QueueError
from .._secrets import scrub_row

__all__ = ["ITEM_COLS", "QueueTables"]

ITEM_COLS = ("item_id", "queue", "run_id", "step", "kind", "input", "context", "choices", "status", "created_at", "team", "workflow",
             "router", "claimed_by", "claim_until", "resolved_by", "resolved_at", "resolution", "expires_at")
_JSON = ("context", "choices", "resolution")


def _item(row: tuple[Any, ...], now: float) -> dict[str, Any]:
    d = dict(zip(ITEM_COLS, row, strict=True))
    d["stored_status"] = d["status"]
    for k in _JSON:
        d[k] = json.loads(d[k]) if d[k] else None
    if d["status"] == "claimed" and (d["claim_until"] or 0) < now:
        d["status"] = "open"  # a lapsed claim: anyone may take it again (claimed_by says who had it)
    if d["status"] in ("open", "claimed") and d["expires_at"] is not None and d["expires_at"] < now:
        d["status"] = "expired"
    return d


class QueueTables:
    _lock: Any
    _db: Any
    dialect: Any

    def _reading(self) -> Any:  # pragma: no cover - provided by the store
        raise NotImplementedError

    def _now(self, sql: str, args: tuple[Any, ...], *, fetch: bool = False) -> list[Any]:  # pragma: no cover - the store's
        raise NotImplementedError

    def _tx(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Several statements in one transaction (all or none), committed when it returns."""
        from .sqlite import StoreError

        self._reading()
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError(f"{getattr(self, 'path', 'store')}: the store cannot be reached")
            db.execute(self.dialect.begin_write)
            try:
                for sql, args in statements:
                    db.execute(sql, scrub_row(args))
                db.execute("COMMIT")
            except BaseException as e:
                try:
                    db.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the connection may be gone; the transaction is too
                    pass
                if isinstance(e, tuple(getattr(self, "_db_errors", ()))):
                    raise StoreError(f"{getattr(self, 'path', 'store')}: the store refused a write ({e})") from None
                raise

    # -- escalation items -------------------------------------------------------------------------
    def queue_suspend(self, item: Mapping[str, Any], state: Mapping[str, Any]) -> str:
        """Put an item on its queue and store the waiting run's state, in one transaction. Returns
        the item id. ``item``: queue, run_id, step, kind, input, context, choices (+ team, workflow,
        router, expires_at); ``state``: workflow, path, version and the run's journal."""
        item_id = item.get("item_id") or uuid.uuid4().hex[:16]
        now = time.time()
        row = {**item, "item_id": item_id, "status": "open", "created_at": now}
        cols = [c for c in ITEM_COLS if c in row]
        vals = tuple(json.dumps(row[c]) if c in _JSON else row[c] for c in cols)
        ins = f"INSERT INTO escalations ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        s = state
        up = ("INSERT INTO suspended_runs (run_id, item_id, workflow, path, version, state, created_at, resume_until) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (run_id) DO UPDATE SET item_id = excluded.item_id, "
              "workflow = excluded.workflow, path = excluded.path, version = excluded.version, state = excluded.state, "
              "created_at = excluded.created_at, resume_until = NULL")
        self._tx([(ins, vals), (up, (item["run_id"], item_id, s["workflow"], s.get("path"), s["version"],
                                     json.dumps(s["journal"], default=str), now)),
                  ("UPDATE runs SET status = 'waiting' WHERE run_id = ?", (item["run_id"],))])
        return item_id

    def queue_items(self, *, queue: str | None = None, status: str | None = None, team: str | None = None, run_id: str | None = None,
                    any_team: bool = True, limit: int = 200) -> list[dict[str, Any]]:
        """Items, oldest first (``status`` as seen now: lapsed claims are open, overdue items expired).
        ``team`` with ``any_team=False`` narrows to that team's items (``None``: those with no team)."""
        self._reading()
        conds, args = [], []
        for col, v in (("queue", queue), ("run_id", run_id)):
            if v is not None:
                conds.append(f"{col} = ?")
                args.append(v)
        if not any_team:
            conds.append("team = ?" if team is not None else "team IS NULL")
            if team is not None:
                args.append(team)
        if status == "resolved":  # the others are what a row's status means now (lapsed claims, expiry): filtered below
            conds.append("status = ?")
            args.append(status)
        w = (" WHERE " + " AND ".join(conds)) if conds else ""
        rows = self._now(f"SELECT {', '.join(ITEM_COLS)} FROM escalations{w} ORDER BY created_at", tuple(args), fetch=True)
        now = time.time()
        items = [_item(r, now) for r in rows]
        if status is not None:
            items = [i for i in items if i["status"] == status]
        return items[:limit]

    def queue_item(self, item_id: str) -> dict[str, Any] | None:
        self._reading()
        rows = self._now(f"SELECT {', '.join(ITEM_COLS)} FROM escalations WHERE item_id = ?", (item_id,), fetch=True)
        return _item(rows[0], time.time()) if rows else None

    def _must(self, item_id: str) -> dict[str, Any]:
        it = self.queue_item(item_id)
        if it is None:
            raise QueueError(f"no escalation item {item_id!r} in this store")
        return it

    def _swap(self, it: dict[str, Any], sets: str, args: tuple[Any, ...]) -> bool:
        """Change an item only if nobody changed it since ``it`` was read (status and claim as read)."""
        got = self._now(f"UPDATE escalations SET {sets} WHERE item_id = ? AND status = ? AND COALESCE(claimed_by, '') = ? "
                        "AND COALESCE(claim_until, 0) = ? RETURNING item_id",
                        (*scrub_row(args), it["item_id"], it["stored_status"], it["claimed_by"] or "", it["claim_until"] or 0), fetch=True)
        return bool(got)

    def queue_claim(self, item_id: str, who: str, *, ttl_s: float = 900.0) -> dict[str, Any]:
        """Claim an item for ``who`` for ``ttl_s`` seconds (again: extends one's own claim)."""
        if not who:
            raise QueueError("a claim needs the name of who takes it (--by)")
        for _ in range(5):
            it = self._must(item_id)
            self._check_open(it, who, claiming=True)
            if self._swap(it, "status = 'claimed', claimed_by = ?, claim_until = ?", (who, time.time() + ttl_s)):
                return self._must(item_id)
        raise QueueError(f"item {item_id!r} keeps changing; try again", conflict=True)

    def _check_open(self, it: dict[str, Any], who: str, *, claiming: bool = False) -> None:
        iid, st = it["item_id"], it["status"]
        if st == "resolved":
            raise QueueError(f"item {iid!r} was already resolved by {it['resolved_by']} at "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(it['resolved_at']))}: a run resumes once", conflict=True)
        if st == "expired":
            raise QueueError(f"item {iid!r} expired unresolved at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(it['expires_at']))}",
                             conflict=True)
        until = time.strftime("%H:%M:%S", time.localtime(it["claim_until"] or 0))
        if st == "claimed" and it["claimed_by"] != who:
            raise QueueError(f"item {iid!r} is claimed by {it['claimed_by']} until {until}", conflict=True)
        if st == "open" and it["claimed_by"] == who and it["claim_until"] is not None and not claiming:
            raise QueueError(f"your claim on item {iid!r} expired at {until}; claim it again (turnout queue claim {iid})", conflict=True)

    def queue_resolve(self, item_id: str, who: str, resolution: Mapping[str, Any]) -> dict[str, Any]:
        """Resolve an item once: ``resolution`` is ``{"route": ...}``, ``{"answer": ...}`` or
        ``{"approved": bool}`` (checked against the item's choices), with an optional ``note``."""
        if not who:
            raise QueueError("a resolution needs the name of who resolves it (--by)")
        for _ in range(5):
            it = self._must(item_id)
            self._check_open(it, who)
            res = check_resolution(it, resolution)
            if self._swap(it, "status = 'resolved', resolved_by = ?, resolved_at = ?, resolution = ?, claim_until = NULL",
                          (who, time.time(), json.dumps(res))):
                return self._must(item_id)
        raise QueueError(f"item {item_id!r} keeps changing; try again", conflict=True)

    # -- waiting runs -----------------------------------------------------------------------------
    def suspended(self, run_id: str) -> dict[str, Any] | None:
        """A waiting run's state (None once it has resumed, or if it never waited)."""
        self._reading()
        rows = self._now("SELECT run_id, item_id, workflow, path, version, state, created_at, resume_until FROM suspended_runs "
                         "WHERE run_id = ?", (run_id,), fetch=True)
        if not rows:
            return None
        r = rows[0]
        return {"run_id": r[0], "item_id": r[1], "workflow": r[2], "path": r[3], "version": r[4], "journal": json.loads(r[5]),
                "created_at": r[6], "resume_until": r[7]}

    def resume_take(self, run_id: str, *, lease_s: float = 3600.0) -> bool:
        """Take a waiting run to resume it: True for exactly one taker until the lease lapses."""
        now = time.time()
        got = self._now("UPDATE suspended_runs SET resume_until = ? WHERE run_id = ? AND (resume_until IS NULL OR resume_until < ?) "
                        "RETURNING run_id", (now + lease_s, run_id, now), fetch=True)
        return bool(got)

    def resume_release(self, run_id: str) -> None:
        """Give a taken run back (its resume failed before it ran): it waits again."""
        self._now("UPDATE suspended_runs SET resume_until = NULL WHERE run_id = ?", (run_id,))

    def resume_done(self, run_id: str, item_id: str) -> None:
        """The run resumed past this item: its state goes (unless it waits on a newer item now)."""
        self._now("DELETE FROM suspended_runs WHERE run_id = ? AND item_id = ?", (run_id, item_id))

    # -- refits -------------------------------------------------------------------------------------
    def record_fit(self, router: str, *, source: str, examples: int, detail: Mapping[str, Any] | None = None) -> None:
        self._now("INSERT INTO router_fits (router, at, source, examples, detail) VALUES (?, ?, ?, ?, ?)",
                  (router, time.time(), source, examples, json.dumps(dict(detail or {}), default=str)))

    def fits(self, router: str | None = None) -> list[dict[str, Any]]:
        self._reading()
        cols = ("router", "at", "source", "examples", "detail")
        w, args = (" WHERE router = ?", (router,)) if router else ("", ())
        rows = self._now(f"SELECT {', '.join(cols)} FROM router_fits{w} ORDER BY at", args, fetch=True)
        return [{**dict(zip(cols, r, strict=True)), "detail": json.loads(r[4])} for r in rows]


def check_resolution(item: Mapping[str, Any], resolution: Mapping[str, Any]) -> dict[str, Any]:
    """The resolution, normalised, or a QueueError saying what this item accepts."""
    kind, choices, iid = item["kind"], item.get("choices") or [], item["item_id"]
    r = {k: v for k, v in resolution.items() if v is not None}
    note = r.pop("note", None)
    out: dict[str, Any]
    if kind == "approve":
        if "approved" not in r or not isinstance(r["approved"], bool):
            raise QueueError(f"item {iid!r} is an approval: resolve it with approve or reject")
        out = {"approved": r["approved"]}
        if isinstance(r.get("answer"), str):
            out["answer"] = r["answer"]
    elif "route" in r:
        if kind != "route":
            raise QueueError(f"item {iid!r} does not choose a route; resolve it with an answer")
        if r["route"] not in choices:
            raise QueueError(f"{r['route']!r} is not a route item {iid!r} can take (routes: {', '.join(choices)})")
        out = {"route": r["route"]}
    elif isinstance(r.get("answer"), str) and r["answer"].strip():
        out = {"answer": r["answer"]}
    else:
        want = "a route (" + ", ".join(choices) + ") or an answer" if kind == "route" else "an answer"
        raise QueueError(f"item {iid!r} needs {want}")
    if isinstance(note, str) and note:
        out["note"] = note[:2000]
    return out


class Queue:
    """``store.queue``: the queue's async door (every read and write in a thread, off the event loop).
    ``await store.queue()`` lists open items; ``claim``, ``resolve``, ``item`` as in ``QueueTables``."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def __call__(self, queue: str | None = None, *, status: str | None = "open", **kw: Any) -> list[dict[str, Any]]:
        import asyncio

        return await asyncio.to_thread(self.store.queue_items, queue=queue, status=status, **kw)

    async def item(self, item_id: str) -> dict[str, Any] | None:
        import asyncio

        return await asyncio.to_thread(self.store.queue_item, item_id)

    async def claim(self, item_id: str, by: str, *, ttl_s: float = 900.0) -> dict[str, Any]:
        import asyncio

        return await asyncio.to_thread(self.store.queue_claim, item_id, by, ttl_s=ttl_s)

    async def resolve(self, item_id: str, by: str, *, route: str | None = None, answer: str | None = None,
                      approved: bool | None = None, note: str | None = None) -> dict[str, Any]:
        import asyncio

        res = {"route": route, "answer": answer, "approved": approved, "note": note}
        return await asyncio.to_thread(self.store.queue_resolve, item_id, by, res)
