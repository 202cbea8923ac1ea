"""The dashboard's routes on the gateway app: the pages of ``dashboard.py`` rendered from the store
in a thread (never on the event loop); a bad ``since`` or search parameter is a 400 page."""

from __future__ import annotations

import asyncio
import html
from typing import Any

from fastapi import Request as HttpRequest

from .._errors import ConfigError
from .gateway import Gateway

__all__ = ["dashboard_routes"]


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def dashboard_routes(app: Any, gw: Gateway) -> None:
    """The dashboard's pages (server-rendered, from the store in a thread)."""
    from fastapi.responses import HTMLResponse

    from . import dashboard

    async def _page(name: str, since: str | None) -> HTMLResponse:
        try:
            html = await asyncio.to_thread(dashboard.page, name, gw.store, since, gw.catalog)
        except ConfigError as e:
            return HTMLResponse(f"<!doctype html><title>bad request</title><p>{_esc(str(e))}</p>", status_code=400)
        return HTMLResponse(html)

    def _route(name: str) -> Any:
        async def show(since: str | None = None) -> HTMLResponse:
            return await _page(name, since)
        return show

    for path, name in (("/", "overview"), ("/routes", "routes"), ("/models", "models"), ("/voting", "voting"),
                       ("/experiments", "experiments")):
        app.add_api_route(path, _route(name), methods=["GET"], include_in_schema=False, response_class=HTMLResponse)

    @app.get("/runs", include_in_schema=False)
    async def dash_runs(request: HttpRequest) -> Any:
        params = {k: v for k, v in request.query_params.items() if k in dashboard.RUN_FILTERS}
        try:
            html = await asyncio.to_thread(dashboard.runs_page, gw.store, params)
        except (ConfigError, ValueError) as e:
            return HTMLResponse(f"<!doctype html><title>bad request</title><p>{_esc(str(e))}</p>", status_code=400)
        return HTMLResponse(html)

    @app.get("/keys", include_in_schema=False)
    async def dash_keys() -> Any:
        return HTMLResponse(await asyncio.to_thread(dashboard.keys_page, gw.store))

    @app.get("/runs/{run_id}", include_in_schema=False)
    async def dash_run(run_id: str) -> Any:
        html = await asyncio.to_thread(dashboard.run_detail, gw.store, run_id)
        if html is None:
            return HTMLResponse(f"<!doctype html><title>not found</title><p>no run {_esc(run_id)}</p>", status_code=404)
        return HTMLResponse(html)
