"""``EventStream``: the gateway's server-sent-event response, on plain asyncio.

Starlette's ``StreamingResponse`` watches for the client going away with an anyio task group and a
second task per response (uvicorn speaks ASGI 2.3, whose ``send`` does not raise once the client
has gone). That costs more per stream than the rest of the response. ``EventStream`` keeps the
same behaviour with one future: ``receive()`` is awaited beside the body, and when it says
``http.disconnect`` the task sending the body is cancelled at once — wherever the body is waiting
(on the upstream's next chunk, on a slow workflow) — and its generator is closed, so the body's own
``finally`` (the run recorded as cancelled, the key billed its reservation) runs as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from starlette.responses import Response

__all__ = ["EventStream"]


class EventStream(Response):
    """An ASGI response streaming ``body`` (bytes) as ``text/event-stream`` with ``headers`` (a
    starlette ``Response``, so FastAPI routes may return it too)."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes] | Iterable[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body_iterator = body
        self.status_code, self.background = 200, None
        hs = {**(headers or {}), "content-type": "text/event-stream; charset=utf-8"}
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in hs.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        task = asyncio.current_task()
        state = {"gone": False, "over": False}

        def client_gone(f: asyncio.Future[Any]) -> None:
            if state["over"] or f.cancelled() or f.exception() is not None:
                return
            state["gone"] = True
            if task is not None:
                task.cancel()

        watch = asyncio.ensure_future(_disconnected(receive))
        watch.add_done_callback(client_gone)
        try:
            await self._send_body(send)
        except asyncio.CancelledError:
            if not state["gone"] or task is None:
                raise  # cancelled from outside (the server shutting down): not ours to swallow
            task.uncancel()  # the client went away: the body was stopped; nothing more to send
        finally:
            state["over"] = True
            watch.cancel()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # an abandoned body runs its own finally now, not at garbage collection

    async def _send_body(self, send: Any) -> None:
        if isinstance(self.body_iterator, AsyncIterator):
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Any) -> None:
    """Returns when the client has gone (the request body was read before the response began)."""
    while True:
        if (await receive())["type"] == "http.disconnect":
            return
