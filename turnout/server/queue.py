"""The escalation queue on the gateway: ``GET /v1/escalations`` (the calling key's team's items),
``GET /v1/escalations/{id}``, ``POST /v1/escalations/{id}/claim`` and ``POST /v1/escalations/{id}/resolve``
(which resumes the waiting run in this server and answers with its result). The dashboard's queue
pages (``dashboard_queue.py``) resolve through the same ``resolve_item``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request as HttpRequest

from .._errors import QueueError
from .errors import ApiError
from .gateway import Gateway
from .keys import ApiKey

__all__ = ["queue_routes", "resolve_item", "visible_item"]


def _sees(gw: Gateway, key: ApiKey, item: dict[str, Any]) -> bool:
    """A key sees its team's items (a key with no team: the items of runs with no team)."""
    if not gw.auth:
        return True
    return item.get("team") == key.team and (item.get("workflow") is None or key.may_run_workflow(item["workflow"]))


async def visible_item(gw: Gateway, key: ApiKey, item_id: str) -> dict[str, Any]:
    it = await asyncio.to_thread(gw.store.queue_item, item_id)
    if it is None or not _sees(gw, key, it):
        raise ApiError(404, f"no escalation item {item_id!r} for this key", type="not_found_error", code="escalation_not_found")
    return it


def _public(it: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in it.items() if k != "stored_status"}


async def resolve_item(gw: Gateway, key: ApiKey, item_id: str, resolution: dict[str, Any], by: str | None = None) -> dict[str, Any]:
    """Resolve (once) and resume the waiting run with the workflow this gateway serves."""
    from ..workflows.waiting import resolve_and_resume

    await visible_item(gw, key, item_id)

    def workflow_for(state: dict[str, Any]) -> Any:
        wf = next((w for w in gw.workflows.values() if w.name == state["workflow"]), None)
        if wf is None:
            raise QueueError(f"this gateway does not serve workflow {state['workflow']!r}, which the run waits in")
        return wf

    meter = gw.limits.meter(key)
    from .._scope import spend_scope

    with spend_scope(key=key.key_id, team=key.team, meters=(meter,) if meter is not None else ()):
        try:
            item, res = await resolve_and_resume(gw.store, item_id, by or key.name, resolution, workflow_for)
        except QueueError as e:
            status = 409 if e.conflict else 400
            raise ApiError(status, str(e), code="escalation_conflict" if e.conflict else "invalid_resolution") from None
    out: dict[str, Any] = {"item": _public(item)}
    if res is not None:
        out["run"] = {"output": res.output, **res.summary()}
    return out


def queue_routes(app: Any, gw: Gateway) -> None:
    from .app import _json_body

    @app.get("/v1/escalations")
    async def list_items(request: HttpRequest, queue: str | None = None, status: str | None = "open") -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        items = await asyncio.to_thread(gw.store.queue_items, queue=queue, status=None if status == "all" else status, limit=500)
        return {"object": "list", "data": [_public(i) for i in items if _sees(gw, key, i)]}

    @app.get("/v1/escalations/{item_id}")
    async def get_item(item_id: str, request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        return _public(await visible_item(gw, key, item_id))

    @app.post("/v1/escalations/{item_id}/claim")
    async def claim(item_id: str, request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        await visible_item(gw, key, item_id)
        body = await _json_body(request, 10_000) if request.headers.get("content-length") not in (None, "0") else {}
        ttl = body.get("ttl_s", 900) if isinstance(body, dict) else 900
        if not isinstance(ttl, (int, float)) or not 0 < ttl <= 86_400:
            raise ApiError(400, "ttl_s must be a number of seconds in (0, 86400]", param="ttl_s")
        try:
            it = await asyncio.to_thread(gw.store.queue_claim, item_id, str(body.get("by") or key.name), ttl_s=float(ttl))
        except QueueError as e:
            raise ApiError(409 if e.conflict else 400, str(e), code="escalation_conflict" if e.conflict else "invalid_claim") from None
        return _public(it)

    @app.post("/v1/escalations/{item_id}/resolve")
    async def resolve(item_id: str, request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        body = await _json_body(request, 100_000)
        if not isinstance(body, dict) or not any(k in body for k in ("route", "answer", "approved")):
            raise ApiError(400, 'send {"route": "billing"}, {"answer": "..."} or {"approved": true|false}, optionally "note" and "by"')
        for k in ("route", "answer", "note", "by"):
            if body.get(k) is not None and not isinstance(body[k], str):
                raise ApiError(400, f"{k} must be a string", param=k)
        if body.get("approved") is not None and not isinstance(body["approved"], bool):
            raise ApiError(400, "approved must be true or false", param="approved")
        res = {k: body.get(k) for k in ("route", "answer", "approved", "note")}
        return await resolve_item(gw, key, item_id, res, body.get("by"))
