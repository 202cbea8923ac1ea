"""``POST /v1/embeddings`` for the MockServer: the FakeEmbedder's deterministic vectors (so a router
behind an HTTP encoder decides as one on the fake does), with the server's latency, faults, auth
and request log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._fakes import FakeEmbedder

_ENCODERS: dict[int, FakeEmbedder] = {}


def embeddings(server: Any) -> Any:
    """The server's ``/v1/embeddings`` handler."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await server._tracked(lambda req: _inner(server, req), request)  # type: ignore[no-any-return]

    return handle


async def _inner(server: Any, request: web.Request) -> web.StreamResponse:
    body, fault, resp = await server._prelude(request)
    if resp is not None:
        return resp
    inp = body.get("input") if isinstance(body, dict) else None
    if isinstance(inp, str):
        inp = [inp]
    if not isinstance(inp, list) or not inp or not all(isinstance(t, str) for t in inp):
        return web.json_response({"error": {"message": "'input' must be a string or a list of strings", "type": "invalid_request_error"}},
                                 status=400)
    dim = int(body.get("dimensions") or 64)
    enc = _ENCODERS.setdefault(dim, FakeEmbedder(dim))
    vecs = await enc.embed(inp)
    tokens = sum(max(1, len(t.split())) for t in inp)
    return web.json_response({
        "object": "list", "model": body.get("model", "mock"),
        "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
