"""``EventStream``: the gateway's server-sent-event response, on plain asyncio.

Starlette's ``StreamingResponse`` watches for the client going away with an anyio task group and a
second task per response (uvicorn speaks ASGI 2.3, whose ``send`` does not raise once the client
has gone), and it writes every chunk to the socket on its own. ``EventStream`` runs the body in one
task and writes from the request's task: everything the body made while the writer waited goes
out in one write (the events of an upstream read arrive together; one system call and one pass
through the ASGI layers instead of one per event), the first event as soon as it exists. A
future awaits ``receive()`` beside them; when it says ``http.disconnect`` the body is cancelled at
once — wherever it is waiting (the upstream's next chunk, a slow workflow) — so its own
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
        hs = {**(headers or {}), "content-type": f"{self.media_type}; charset=utf-8"}
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in hs.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        body = self.body_iterator
        if not isinstance(body, AsyncIterator):  # a finished answer replayed: nothing to wait for
            await send({"type": "http.response.body", "body": b"".join(body), "more_body": False})
            return
        pending: list[bytes] = []
        wake = asyncio.Event()
        state = {"gone": False, "ended": False}

        async def produce() -> None:
            try:
                async for chunk in body:
                    pending.append(chunk)
                    wake.set()
            finally:
                state["ended"] = True
                wake.set()

        def client_gone(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is None:
                state["gone"] = True
                wake.set()

        producer = asyncio.ensure_future(produce())
        watch = asyncio.ensure_future(_disconnected(receive))
        watch.add_done_callback(client_gone)
        try:
            while True:
                await wake.wait()
                wake.clear()
                if state["gone"]:
                    return  # the body is stopped below; nothing more to send
                if pending:  # every event the body made since the last write, in one write
                    data = b"".join(pending)
                    pending.clear()
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                if state["ended"] and not pending:
                    break
            producer.result()  # what the body raised, raised here (as a streamed body's error always was)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watch.cancel()
            producer.cancel()  # a no-op once it ended; the client gone or the server stopping: the body stops now
            await asyncio.gather(producer, return_exceptions=True)
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()  # an abandoned body runs its own finally now, not at garbage collection


async def _disconnected(receive: Any) -> None:
    """Returns when the client has gone (the request body was read before the response began)."""
    while True:
        if (await receive())["type"] == "http.disconnect":
            return
