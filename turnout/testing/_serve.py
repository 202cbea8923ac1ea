"""``serve_app``: a test's own aiohttp app on a free loopback port (a webhook, a collector, a server
that misbehaves in a way ``MockServer`` does not)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

__all__ = ["serve_app"]


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """``async with serve_app(app) as url:`` — ``app`` served on 127.0.0.1 (``url`` has no trailing
    slash) until the block ends."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
