"""A loopback OpenAI-compatible (and Anthropic Messages) mock server, a real HTTP server on 127.0.0.1.

Configurable latency and a queue of injected faults, consumed one per request:

=============  =========================================================================
``"429"``      429 with ``Retry-After`` (seconds, default 1)
``"500"``      500 with an OpenAI-style error body
``"503"``      503 with an error body
``"401"``      401 invalid key
``"echo_key"`` 401 whose message repeats the credential the client sent (as careless proxies do)
``"400"``      400 bad request
``"hang"``     never answers (until the client gives up)
``"malformed"`` 200 with a body that is not JSON
``"shape"``    200 with JSON of an unexpected shape
``"echo_headers"`` 200 with JSON of an unexpected shape that echoes the request headers (key included)
``"context"``  400 ``context_length_exceeded``, as OpenAI answers a prompt too long for the model
``"reset"``    the connection is closed without a response
``"truncate"`` the answer stops part way (stream: no finish, no [DONE]; body: short of its length)
``"error_event"`` (stream) a chunk or two, then an error event
``"bad_tool_args"`` a tool call whose arguments are cut off (not JSON), on a request with tools
``"linger"``   (stream) the whole answer and ``[DONE]``, then the body stays open (for 30 s)
=============  =========================================================================

Tools: a request with ``tools`` is answered with a call — the next one queued by
``script_tool_calls([[("get_invoice", {"number": "INV-1"})], ...])`` (one list per request;
several entries are parallel calls), else the tool ``tool_choice`` names (else the first) with
the smallest arguments its schema allows. A request whose last turn is a tool result, or with
``tool_choice: none``, gets text: ``tool said: <the result>``. Streams send the calls as deltas.

Embeddings: ``POST /v1/embeddings`` answers the FakeEmbedder's vectors (``dimensions``, default 64).
In-process: ``async with MockServer(latency=0.05) as srv: srv.url``. Separate process (benchmarks):
``python -m turnout.testing.mockserver --port 0 --latency 0.05`` prints ``READY <port>``; faults can
then be queued with ``POST /_mock/faults {"kind": "429", "times": 2}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._mock_embed import embeddings
from ._mocktools import instance_of_schema, openai_choice, tool_input, tool_plan
from ._mocktools import words as _words

__all__ = ["FAULT_KINDS", "MockServer", "instance_of_schema"]

FAULT_KINDS = ("429", "500", "503", "401", "echo_key", "400", "hang", "malformed", "shape", "echo_headers", "context", "reset",
               "truncate", "error_event", "bad_tool_args", "linger")


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


class MockServer:
    """See the module docstring. ``reply(body) -> str`` overrides the default echo answer."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        reply: Callable[[dict[str, Any]], str] | None = None,
        api_key: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        record: bool = True,
        retry_after: float = 1.0,
        handler_cancellation: bool = False,
        stale_after: str | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the mock server binds to loopback only")
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.reply = reply
        self.api_key = api_key
        self.host = host
        self.port = port
        self.record = record
        self.retry_after = retry_after
        self.faults: deque[str] = deque()
        self.tool_script: deque[list[tuple[str, Any]]] = deque()
        self.requests: list[Recorded] = []
        self.count = 0
        self.active = 0
        self.max_active = 0
        self.disconnects = 0  # streams whose client went away before the end
        self.handler_cancellation = handler_cancellation  # cancel a handler when its client disconnects
        # stale_after="stream" (or "any"): after a stream (or any answer) the server forgets the
        # connection without saying so (no ``Connection: close``), as llama.cpp's server does after a
        # stream: the next request sent on it is dropped before any byte comes back
        if stale_after not in (None, "stream", "any"):
            raise ValueError("stale_after is None, 'stream' or 'any'")
        self.stale_after = stale_after
        self._stale: set[int] = set()  # ids of the transports forgotten that way
        self._seen: set[int] = set()
        self.connections = 0  # distinct connections that sent a request
        self.stale_drops = 0  # requests dropped because they came on a forgotten connection
        self.cancelled = 0  # handlers cancelled that way (with handler_cancellation=True)
        self._runner: web.AppRunner | None = None
        # hold_after(n): answer n requests, then hold every later one until release() — so a test can
        # act (kill, interrupt) while work is certainly in flight, by event instead of by timing
        self._hold_after: int | None = None
        self._started = 0
        self.held = 0
        self._held_event: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self._drop_held = False

    # -- control -----------------------------------------------------------------------------
    def hold_after(self, n: int) -> None:
        """Answer the next ``n`` requests as usual, then hold every later one until ``release()``."""
        self._hold_after, self._started, self.held = n, 0, 0
        self._held_event, self._release = asyncio.Event(), asyncio.Event()

    async def wait_held(self, k: int = 1) -> None:
        """Return once at least ``k`` requests are being held."""
        assert self._held_event is not None, "call hold_after() first"
        while self.held < k:
            self._held_event.clear()
            await self._held_event.wait()

    def release(self, *, drop: bool = False) -> None:
        """Stop holding: answer the held requests, or (``drop=True``: their client is gone) answer
        them 503 without counting them as served."""
        self._hold_after, self._drop_held = None, drop
        if self._release is not None:
            self._release.set()

    def script_tool_calls(self, turns: list[list[tuple[str, Any]]]) -> None:
        """Queue the tool calls of the next requests that carry tools: one list of (name, arguments)
        per request; arguments a dict (sent as JSON) or a string (sent as it is)."""
        self.tool_script.extend(turns)

    def fail(self, kind: str, times: int = 1) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        self.faults.extend([kind] * times)

    @property
    def url(self) -> str:
        """Base URL for OpenAI-compatible clients (…/v1)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root(self) -> str:
        """Base URL for the Anthropic adapter (which appends /v1/messages)."""
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", embeddings(self))
        app.router.add_post("/_mock/faults", self._ctl_faults)
        app.router.add_post("/_mock/tool_calls", self._ctl_tools)
        app.router.add_get("/_mock/stats", self._ctl_stats)
        return app

    async def start(self) -> MockServer:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5,
                                     handler_cancellation=self.handler_cancellation)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.port = sock.getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MockServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ------------------------------------------------------------------------------
    async def _ctl_faults(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.fail(doc["kind"], int(doc.get("times", 1)))
        return web.json_response({"queued": len(self.faults)})

    async def _ctl_tools(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.script_tool_calls([[(c["name"], c.get("arguments", {})) for c in turn] for turn in doc["turns"]])
        return web.json_response({"queued": len(self.tool_script)})

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.count, "max_active": self.max_active, "faults": list(self.faults),
                                  "connections": self.connections, "stale_drops": self.stale_drops, "disconnects": self.disconnects})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model"}]})

    def _authorised(self, request: web.Request) -> bool:
        if not self.api_key:
            return True
        auth = request.headers.get("Authorization", "")
        return auth == f"Bearer {self.api_key}" or request.headers.get("x-api-key") == self.api_key

    async def _begin(self, request: web.Request) -> tuple[Any, str | None]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.count += 1
        if self.record:
            self.requests.append(Recorded(request.path, dict(request.headers), body))
        fault = self.faults.popleft() if self.faults else None
        if fault is None and not self._authorised(request):
            fault = "401"
        return body, fault

    def _answer(self, body: dict[str, Any], schema: Any) -> str:
        if schema is not None:
            return json.dumps(instance_of_schema(schema))
        if self.reply is not None:
            return self.reply(body)
        msgs = body.get("messages") or [{}]
        last = msgs[-1].get("content", "")
        if msgs[-1].get("role") == "tool":
            return f"tool said: {last}"[:2000]
        if isinstance(last, list):  # Anthropic blocks: the tool results, else the text
            res = [b.get("content") for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
            if res:
                return ("tool said: " + " | ".join(str(r) for r in res))[:2000]
            last = "".join(str(b.get("text", "")) for b in last if isinstance(b, dict))
        return f"echo: {last}"[:2000]

    async def _error(self, request: web.Request, fault: str) -> web.StreamResponse | None:
        """Produce the fault's response, or None when the fault is handled later (stream faults)."""
        def err(status: int, msg: str, typ: str, headers: dict[str, str] | None = None) -> web.Response:
            return web.json_response({"error": {"message": msg, "type": typ}}, status=status, headers=headers)

        if fault == "429":
            return err(429, "rate limit reached", "rate_limit_error", {"Retry-After": str(self.retry_after)})
        if fault == "500":
            return err(500, "internal error", "server_error")
        if fault == "503":
            return err(503, "overloaded", "server_error")
        if fault == "401":
            return err(401, "invalid api key", "authentication_error")
        if fault == "echo_key":
            sent = request.headers.get("Authorization") or request.headers.get("x-api-key", "")
            return err(401, f"invalid credential: {sent}", "authentication_error")
        if fault == "400":
            return err(400, "bad request: unsupported parameter", "invalid_request_error")
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault == "malformed":
            return web.Response(text="<html>502 Bad Gateway from a proxy</html>", content_type="text/html")
        if fault == "shape":
            return web.json_response({"result": "this is not a chat completion"})
        if fault == "echo_headers":  # a proxy's debug page: 200, wrong shape, every request header
            return web.json_response({"debug": {"headers": dict(request.headers)}})
        if fault == "context":
            return web.json_response({"error": {"message": "This model's maximum context length is 4096 tokens. However, your "
                                                "messages resulted in 9000 tokens.", "type": "invalid_request_error",
                                                "param": "messages", "code": "context_length_exceeded"}}, status=400)
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        return None

    async def _tracked(self, inner: Any, request: web.Request) -> web.StreamResponse:
        """Concurrency and cancellation accounting shared by both wire formats."""
        t = request.transport
        tid = id(t)
        if tid not in self._seen:
            self._seen.add(tid)
            self.connections += 1
        if tid in self._stale:  # this connection was forgotten: nothing comes back on it
            self._stale.discard(tid)
            self.stale_drops += 1
            if t is not None:
                t.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        resp = await self._tracked_inner(inner, request)
        if self.stale_after == "any" or (self.stale_after == "stream" and isinstance(resp, web.StreamResponse)
                                         and not isinstance(resp, web.Response)):
            self._stale.add(tid)
        return resp

    async def _tracked_inner(self, inner: Any, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self._hold_after is not None:
                self._started += 1
                if self._started > self._hold_after and self._release is not None and self._held_event is not None:
                    self.held += 1
                    self._held_event.set()
                    await self._release.wait()
                    if self._drop_held:
                        return web.Response(status=503, text="dropped by the mock server (held, then released with drop=True)")
            return await inner(request)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._tracked(self._openai_inner, request)

    async def _prelude(self, request: web.Request) -> tuple[Any, str | None, web.StreamResponse | None]:
        """Both wire formats begin alike: the body, the latency, then the fault — answered here unless
        it is a stream fault, handled later."""
        body, fault = await self._begin(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        return body, fault, (await self._error(request, fault) if fault else None)

    async def _openai_inner(self, request: web.Request) -> web.StreamResponse:
        body, fault, resp = await self._prelude(request)
        if resp is not None:
            return resp
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return web.json_response({"error": {"message": "'messages' must be a list", "type": "invalid_request_error"}}, status=400)
        rf = body.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else ({} if rf.get("type") == "json_object" else None)
        plan = tool_plan(body, fault, self.tool_script, self.count, anthropic=False)
        text = self._answer(body, schema) if plan is None else ""
        p_tok = sum(_words(str(m.get("content", ""))) for m in body["messages"])
        c_tok = _words(text) if plan is None else sum(_words(a) for _, _, a in plan)
        max_tokens = body.get("max_tokens")
        finish, cid = "stop", f"chatcmpl-mock{self.count}"
        if max_tokens is not None and c_tok > max_tokens:
            text, c_tok, finish = " ".join(text.split()[:max_tokens]), max_tokens, "length"
        if not body.get("stream"):
            if fault == "truncate":
                return await self._truncated(request)
            choice = openai_choice(body, text, plan, finish)
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "mock"),
                "choices": [choice],
                "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok},
            })
        return await self._openai_stream(request, body, fault, plan, text, finish, cid, (p_tok, c_tok))

    async def _openai_stream(self, request: web.Request, body: dict[str, Any], fault: str | None, plan: Any, text: str, finish: str,
                             cid: str, tokens: tuple[int, int]) -> web.StreamResponse:
        p_tok, c_tok = tokens
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        words = text.split(" ")
        pieces = [w + " " for w in words[:-1]] + words[-1:]

        def chunk(delta: dict[str, Any], fin: str | None = None) -> bytes:
            doc = {"id": cid, "object": "chat.completion.chunk", "model": body.get("model", "mock"),
                   "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]}
            return b"data: " + json.dumps(doc).encode() + b"\n\n"

        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            if plan is not None:  # each call: its id and name, then its arguments in two fragments
                for k, (i, n, a) in enumerate(plan):
                    await resp.write(chunk({"tool_calls": [{"index": k, "id": i, "type": "function", "function": {"name": n, "arguments": ""}}]}))
                    for frag in (a[: len(a) // 2], a[len(a) // 2:]):
                        await resp.write(chunk({"tool_calls": [{"index": k, "function": {"arguments": frag}}]}))
                pieces, finish = [], "tool_calls"
            for i, piece in enumerate(pieces):
                if fault == "truncate" and i >= max(1, len(pieces) // 2):
                    return resp  # ends without finish_reason or [DONE]
                if fault == "error_event" and i >= 1:
                    await resp.write(b'data: {"error": {"message": "upstream failed mid-stream"}}\n\n')
                    return resp
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await resp.write(chunk({"content": piece}))
            await resp.write(chunk({}, finish))
            await resp.write(b"data: " + json.dumps({"id": cid, "choices": [], "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok,
                                                                           "total_tokens": p_tok + c_tok}}).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            if fault == "linger":  # a server that does not end the body after [DONE]
                await asyncio.sleep(30)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return resp

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        """A JSON answer that stops part way: its length promised, the connection closed early."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b'{"id": "x", "choices": [')
        if request.transport is not None:
            request.transport.close()
        return resp

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._tracked(self._anthropic_inner, request)

    async def _anthropic_inner(self, request: web.Request) -> web.StreamResponse:
        body, fault, resp = await self._prelude(request)
        if resp is not None:
            return resp
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "max_tokens" not in body:
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error", "message": "messages and max_tokens are required"}}, status=400)
        plan = tool_plan(body, fault, self.tool_script, self.count, anthropic=True)
        answer = self._answer(body, None)
        p_tok = sum(_words(str(m.get("content", ""))) for m in body["messages"]) + (_words(body["system"]) if body.get("system") else 0)
        mid = f"msg_mock{self.count}"
        if not body.get("stream"):
            if plan is not None:
                content = [{"type": "tool_use", "id": i, "name": n, "input": tool_input(a)} for i, n, a in plan]
                c_tok, stop = 5, "tool_use"
            else:
                content, c_tok, stop = [{"type": "text", "text": answer}], _words(answer), "end_turn"
            return web.json_response({
                "id": mid, "type": "message", "role": "assistant", "model": body.get("model"), "content": content,
                "stop_reason": stop, "usage": {"input_tokens": p_tok, "output_tokens": c_tok},
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def ev(name: str, doc: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: {json.dumps(doc)}\n\n".encode())

        await ev("message_start", {"type": "message_start", "message": {"id": mid, "usage": {"input_tokens": p_tok, "output_tokens": 1}}})
        if plan is not None:
            for k, (i, n, a) in enumerate(plan):
                await ev("content_block_start", {"type": "content_block_start", "index": k,
                                                 "content_block": {"type": "tool_use", "id": i, "name": n, "input": {}}})
                for frag in (a[: len(a) // 2], a[len(a) // 2:]):
                    await ev("content_block_delta", {"type": "content_block_delta", "index": k,
                                                     "delta": {"type": "input_json_delta", "partial_json": frag}})
                await ev("content_block_stop", {"type": "content_block_stop", "index": k})
            await ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}})
            await ev("message_stop", {"type": "message_stop"})
            return resp
        await ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        words = answer.split(" ")
        for i, w in enumerate(words):
            if fault == "truncate" and i >= max(1, len(words) // 2):
                return resp
            if fault == "error_event" and i >= 1:
                await ev("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                return resp
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w + (" " if i < len(words) - 1 else "")}})
        await ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        await ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(words)}})
        await ev("message_stop", {"type": "message_stop"})
        return resp


async def _serve_forever(args: Any) -> None:
    n = args.reply_words
    reply = (lambda body: " ".join(f"w{i}" for i in range(n))) if n else None  # noqa: E731 - a model that talks until stopped
    srv = MockServer(latency=args.latency, chunk_delay=args.chunk_delay, port=args.port, record=False, reply=reply)
    await srv.start()
    print(f"READY {srv.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await srv.stop()


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m turnout.testing.mockserver", description="loopback OpenAI-compatible mock server")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    ap.add_argument("--reply-words", type=int, default=0,
                    help="answer with this many words, cut only by the request's max_tokens (a model that runs on)")
    args = ap.parse_args(argv)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_serve_forever(args))
    except KeyboardInterrupt:
        pass
