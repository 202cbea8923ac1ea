"""The turnout gateway: an OpenAI-compatible server in front of the catalog, the model router and the
workflows (``turnout serve``; ``pip install 'turnout[server]'``).

- ``POST /v1/chat/completions`` (JSON or SSE, the OpenAI wire format), ``GET /v1/models``,
  ``POST /v1/embeddings`` (the embedded MiniLM, float or base64). ``model`` names a catalog model,
  ``turnout/auto`` (the ``ModelRouter``: tier + compliance + upward failover) or
  ``workflow/NAME``. Headers ``x-turnout-model``, ``x-turnout-route``, ``x-turnout-cost-usd`` and
  ``x-turnout-run-id`` say who served it and what it cost; ``x-turnout-escalation`` names the queue
  item a workflow's run waits on.
- ``POST /v1/workflows/{name}/runs``, ``GET /v1/runs/{id}``, ``POST /v1/runs/{id}/feedback``.
- ``GET /v1/escalations``, ``POST /v1/escalations/{id}/claim|resolve`` (``queue.py``): the people in
  the loop; resolving resumes the waiting run here. The dashboard's ``/queue`` pages do the same.
- ``GET /metrics`` (Prometheus), ``GET /healthz``, ``GET /readyz``.
- Virtual keys (``turnout keys create``): 401 without a valid key, 403 outside its models and
  workflows, 429 over its rate or budget — each an OpenAI-style error object with a clear message.
- Every request is a run in the trace store, tagged with the key and team, so spend per key is in
  the store and ``turnout report`` sees gateway traffic.
- A stream that fails before its first token falls back (the catalog's Fallback) or returns a JSON
  error with the right status; after the first token it ends with an SSE error event (the OpenAI
  client raises it) and no ``[DONE]`` — never a silently truncated 200.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._errors import TurnoutError
from .._json import loads
from .._types import Completion, Message, Request, Usage
from .._yaml import json_line
from ..policies.embedding import token_bound
from .access import Observed, note
from .errors import ApiError, api_error, safe_header
from .gateway import Gateway, refusal, workflow_error
from .stream import EventStream
from .wire import (
    SSE_DONE,
    ChatIn,
    ChunkEncoder,
    EmbeddingsIn,
    WireError,
    completion_body,
    conversation_text,
    dumps,
    finish_reason,
    sse,
    to_request,
    user_text,
)

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("turnout.server")


async def _json_body(request: Any, limit: int) -> Any:
    n = request.headers.get("content-length")
    if n is not None and n.isdigit() and int(n) > limit:
        raise ApiError(413, f"request body of {n} bytes is over the limit of {limit} bytes", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes", code="body_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "empty request body: send a JSON object", code="invalid_json")
    try:
        return json_line(raw.decode("utf-8"), loads)  # also refuses bodies nested too deeply (never a RecursionError)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None


def _parse(model: Any, body: Any) -> Any:
    """A wire body validated into ``model`` (``ChatIn``, ``EmbeddingsIn``); a 400 naming the field otherwise."""
    try:
        return model.parse(body)
    except WireError as e:
        raise ApiError(400, str(e), param=e.param) from None


class FastJSON(JSONResponse):
    """JSON via orjson (about 5x faster than json.dumps for these bodies)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def create_app(gw: Gateway) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        import gc

        gc.collect()
        gc.freeze()  # the objects built at start-up live for the whole process: keep them out of every GC pass
        yield
        await gw.aclose()

    kw: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI's own OpenTelemetry layer costs ~0.1 ms a request whenever opentelemetry is installed;
        # turnout traces calls itself (Traced, OTelSink), so it is off here
        kw["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="turnout gateway", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None, **kw)
    app.state.gateway = gw

    def error_response(e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    _error_handlers(app, error_response)
    chat = _chat_route(app, gw)
    _openai_routes(app, gw)
    _run_routes(app, gw)
    from .queue import queue_routes

    queue_routes(app, gw)
    _ops_routes(app, gw)
    if gw.dashboard:
        from .dashboard_routes import dashboard_routes

        dashboard_routes(app, gw)
        from .dashboard_queue import queue_pages

        queue_pages(app, gw)
    fast = _FastPath(app, chat, error_response, ("localhost", "127.0.0.1", "::1", *gw.allowed_hosts))
    return Observed(fast, access_log=gw.access_log, metrics=gw.metrics)  # every request: its log line, metrics, rate headers


def _error_handlers(app: Any, error_response: Any) -> None:
    """Every error as an OpenAI-style error object: never a stack trace."""
    @app.exception_handler(ApiError)
    async def _api_error(request: HttpRequest, e: ApiError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: HttpRequest, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error_response(ApiError(400, f"{loc}: {first.get('msg', 'invalid')}", param=loc or None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: HttpRequest, e: StarletteHTTPException) -> JSONResponse:
        typ = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(e.status_code, str(e.detail), type=typ))

    @app.exception_handler(TurnoutError)
    async def _turnout_error(request: HttpRequest, e: TurnoutError) -> JSONResponse:
        return error_response(api_error(e))  # expected (a budget, a bad upstream ...): no traceback in the log

    @app.exception_handler(Exception)
    async def _unexpected(request: HttpRequest, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(api_error(e))


def _chat_route(app: Any, gw: Gateway) -> Any:
    """``POST /v1/chat/completions`` (returned: the fast path calls it directly)."""
    @app.post("/v1/chat/completions")
    async def chat_completions(request: HttpRequest) -> Any:
        t0 = time.perf_counter()
        key = await gw.authenticate(request.headers.get("authorization"))
        chat = _parse(ChatIn, await _json_body(request, gw.max_body))
        try:
            req = to_request(chat)
        except WireError as e:
            raise ApiError(400, str(e), param=e.param) from None
        kind, target = gw.target(key, chat.model)
        note(model=chat.model)  # resolved: a name the server knows (a bounded label)
        text = user_text(req)  # a workflow's input; the run stores the whole conversation
        async with gw.request_run(key, chat.model, conversation_text(req), tokens=_tokens(req), deadline=_deadline(request)) as run:
            headers = {"x-turnout-run-id": run.run_id}
            if kind == "workflow":
                res = await run.workflow(target, text)
                headers.update({"x-turnout-model": safe_header(chat.model), "x-turnout-cost-usd": f"{res.cost_usd:.8f}"})
                if res.decisions:
                    headers["x-turnout-route"] = safe_header(res.decisions[-1][1].route or "")
                if res.waiting:  # the answer is the step's holding message; a person resolves the item (docs/people.md)
                    headers["x-turnout-escalation"] = safe_header(res.waiting)
                if res.status == "error":
                    raise workflow_error(chat.model[9:], res, headers)
                c = Completion(res.text, chat.model, "stop", Usage(res.input_tokens, res.output_tokens), res.cost_usd, res.latency_s)
                if chat.stream:
                    return EventStream(ChunkEncoder(run.run_id, chat.model).whole(c.text), headers)
                return FastJSON(completion_body(c, run.run_id, chat.model), headers=headers)
            if not chat.stream:
                with run.scope():
                    c, *more = await _answers(target, req, chat.n or 1)
                note(decisions=[(chat.model, x.decision) for x in (c, *more) if x.decision is not None])
                run.output = c.text if not c.tool_calls else conversation_text(Request((Message.assistant(c.text, c.tool_calls),)))
                return FastJSON(completion_body(c, run.run_id, chat.model, more), headers={**headers, **_served(c)})
            # streaming: the first chunk is awaited here, so a failure before any token is a proper HTTP error
            with run.scope():
                agen = target.stream(req).__aiter__()
                try:
                    first = await agen.__anext__()
                except StopAsyncIteration:
                    first = None
                note(ttft_s=time.perf_counter() - t0)
            run.detach()  # from here the stream's body finishes the run
        served = first.decision if first is not None else None  # this request's own decision, never another's
        if served is not None:
            note(decisions=[(chat.model, served)])
        if served is not None:
            headers["x-turnout-route"] = safe_header(served.stage or "")
        headers["x-turnout-model"] = safe_header(first.model if first is not None and first.model else chat.model)
        if first is not None and first.cached:
            headers["x-turnout-cache"] = "hit"
        return EventStream(_stream_body(run, agen, first, chat), {**headers, "Cache-Control": "no-cache"})

    return chat_completions


def _openai_routes(app: Any, gw: Gateway) -> None:
    """``GET /v1/models``, ``POST /v1/embeddings``."""
    @app.get("/v1/models")
    async def list_models(request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        names = [n for n in gw.model_names() if (key.may_run_workflow(n[9:]) if n.startswith("workflow/") else key.may_use_model(n))]
        names += [n for n in gw.embedder_names() if key.may_use_model(n)]
        return {"object": "list", "data": [_model_entry(n) for n in names]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        known = model_id in gw.model_names() or model_id in gw.embedder_names()
        allowed = key.may_run_workflow(model_id[9:]) if model_id.startswith("workflow/") else key.may_use_model(model_id)
        if not (known and allowed):  # one answer for both: a key cannot probe what others may use
            raise ApiError(404, f"the model {model_id!r} does not exist or this key may not use it", code="model_not_found", param="model")
        return _model_entry(model_id)

    @app.post("/v1/embeddings")
    async def embeddings(request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        body = await _json_body(request, gw.max_body)
        e = _parse(EmbeddingsIn, body)
        try:
            enc = gw.embedding_model(e.model)
        except KeyError:
            raise ApiError(404, f"unknown embedding model {e.model!r}; this gateway serves {', '.join(gw.embedder_names())}",
                           code="model_not_found", param="model") from None
        if not key.may_use_model(e.model):
            raise ApiError(403, f"key {key.name!r} may not use model {e.model!r}", type="permission_error", code="model_not_allowed")
        note(model=e.model)
        dim = getattr(enc, "dim", None)
        if e.dimensions is not None and dim and e.dimensions != dim:
            raise ApiError(400, f"dimensions: {e.model} gives {dim}-dimensional vectors and cannot shorten them; omit dimensions "
                                f"or pass {dim}", param="dimensions")
        bound = token_bound(e.inputs)
        # a run like any request: the key's rate admits it, its budget (a scope meter) is charged per batch
        async with gw.request_run(key, e.model, "\n".join(e.inputs)[:2000], tokens=bound, deadline=_deadline(request)) as run:
            try:
                with run.scope():
                    counted = getattr(enc, "embed_counted", None)
                    vecs, tokens = await counted(e.inputs) if counted is not None else (await enc.embed(e.inputs), 0)
            except TurnoutError as err:
                raise api_error(err) from None
            run.status, run.output = "ok", f"{len(vecs)} embeddings"
        if e.dimensions is not None and len(vecs) and vecs.shape[1] != e.dimensions:
            raise ApiError(400, f"dimensions: {e.model} gave {vecs.shape[1]}-dimensional vectors, not {e.dimensions}", param="dimensions")
        import numpy as np

        data = []
        for i, v in enumerate(vecs):
            arr = np.asarray(v, dtype="<f4")
            emb: Any = base64.b64encode(arr.tobytes()).decode() if e.encoding_format == "base64" else [float(x) for x in arr]
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = tokens or sum(max(1, len(t) // 4) for t in e.inputs)
        return {"object": "list", "data": data, "model": e.model, "usage": {"prompt_tokens": n, "total_tokens": n}}


def _run_routes(app: Any, gw: Gateway) -> None:
    """Workflow runs, run lookups and feedback."""
    @app.post("/v1/workflows/{name}/runs")
    async def run_workflow(name: str, request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        body = await _json_body(request, gw.max_body)
        if not isinstance(body, dict) or "input" not in body:
            raise ApiError(400, 'send {"input": ...} (text or an object), optionally "tags"', param="input")
        _, wf = gw.target(key, f"workflow/{name}")
        note(model=f"workflow/{name}")
        text = body["input"] if isinstance(body["input"], str) else json.dumps(body["input"])
        async with gw.request_run(key, f"workflow/{name}", text, tokens=max(1, len(text) // 4), deadline=_deadline(request)) as run:
            res = await run.workflow(wf, body["input"])  # each of its calls charged to the key's budget
            if res.status == "error" and refusal(res.exception):
                raise workflow_error(name, res, {"x-turnout-run-id": run.run_id})
        return {"run_id": run.run_id, "workflow": name, "output": res.output, **{k: v for k, v in res.summary().items() if k != "run_id"}}

    @app.get("/v1/runs/{run_id}")
    async def get_run(run_id: str, request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        d = await asyncio.to_thread(gw.store.run_detail, run_id)  # never a store read on the event loop
        if d is None or (gw.auth and dict(d["run"].get("tags") or {}).get("key") != key.key_id):  # a key sees its own runs
            raise ApiError(404, f"no run {run_id!r} for this key", type="not_found_error", code="run_not_found")
        return d

    @app.post("/v1/runs/{run_id}/feedback")
    async def feedback(run_id: str, request: HttpRequest) -> Any:
        await get_run(run_id, request)
        body = await _json_body(request, 100_000)
        if not isinstance(body, dict):
            raise ApiError(400, 'send {"score": 1, "labels": {"route": "billing"}, "comment": "..."}')
        score, labels, comment = body.get("score"), body.get("labels") or {}, body.get("comment")
        if score is not None and not isinstance(score, (int, float)):
            raise ApiError(400, "score must be a number", param="score")
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ApiError(400, "labels must be an object of strings", param="labels")
        await asyncio.to_thread(gw.store.add_feedback, run_id, score=score, labels=labels,
                                comment=comment if isinstance(comment, str) else None)
        return {"ok": True, "run_id": run_id}


def _ops_routes(app: Any, gw: Gateway) -> None:
    """``/metrics``, ``/healthz``, ``/readyz``."""
    @app.get("/metrics")
    async def metrics() -> Any:
        if gw.metrics is None:
            raise ApiError(404, "metrics need prometheus-client: pip install 'turnout[metrics]'", type="not_found_error")
        gw.metrics.set_budgets(await gw.budgets())  # read at scrape time: what each budget has left now
        return Response(gw.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        problems = []
        if not getattr(gw.store, "connected", True):
            problems.append("trace store unreachable")
        problem = await gw.limits.ping()
        if problem:
            problems.append(problem)
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return {"status": "ready"}


def _deadline(request: Any) -> float | None:
    """``x-turnout-deadline: SECONDS`` bounds the request's run: every model call in it (a workflow's
    too) stops there (504 ``deadline_exceeded``)."""
    raw = request.headers.get("x-turnout-deadline")
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not 0 < v <= 86_400 or v != v:
        raise ApiError(400, f"x-turnout-deadline must be seconds in (0, 86400], not {raw[:20]!r}", param="x-turnout-deadline")
    return v


class _FastPath:
    """The ASGI app: ``POST /v1/chat/completions`` — the hot path — goes straight to its handler;
    everything else (and the OpenAPI schema, which still lists it) through FastAPI's stack. Skipping
    the middleware, routing and dependency layers measured ~0.3 ms a request on this machine."""

    def __init__(self, app: Any, chat: Any, error_response: Any, hosts: tuple[str, ...]) -> None:
        self.app, self.chat, self.error_response = app, chat, error_response
        self.hosts = frozenset(h.lower().strip("[]") for h in hosts)

    def __getattr__(self, name: str) -> Any:  # .state, .routes, .openapi() ... are FastAPI's
        return getattr(self.app, name)

    def host_ok(self, scope: Any) -> bool:
        """The request's Host (port dropped) is one this server answers to (DNS-rebinding guard)."""
        if "*" in self.hosts:
            return True
        host = next((v for k, v in scope.get("headers", ()) if k == b"host"), None)
        if host is None:
            return True  # HTTP/1.0 without Host: not a browser
        h = host.decode("latin-1").lower()
        h = h[1:h.index("]")] if h.startswith("[") and "]" in h else h.rsplit(":", 1)[0] if h.count(":") == 1 else h
        return h in self.hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.host_ok(scope):
            e = ApiError(421, "this server does not answer to that Host header (add it with turnout serve --allowed-host)",
                         type="invalid_request_error", code="host_not_allowed")
            await self.error_response(e)(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/chat/completions":
            from starlette.requests import Request as _Req

            try:
                resp = await self.chat(_Req(scope, receive))
            except ApiError as e:
                resp = self.error_response(e)
            except Exception as e:  # noqa: BLE001 - never a stack trace to the client
                if not isinstance(e, TurnoutError):
                    log.exception("unexpected error on POST /v1/chat/completions")
                resp = self.error_response(api_error(e))
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _answers(target: Any, req: Request, n: int) -> list[Completion]:
    """One answer, or ``n`` samples at once through the fan-out engine (each its own seed when the
    request has one; any sample failing fails the request, as OpenAI's ``n`` does)."""
    if n == 1:
        return [await target.complete(req)]
    from ..parallel.engine import fan_out

    reqs = [req if req.seed is None else req.with_(seed=req.seed + i) for i in range(n)]
    res = await fan_out([lambda r=r: target.complete(r) for r in reqs], policy="fail_fast")
    if res.failed:
        raise res.failed[0].error  # type: ignore[misc]
    return res.values


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "turnout"}


def _tokens(req: Request) -> int:
    return max(1, req.prompt_chars // 4) + (req.max_tokens or 0)


def _served(c: Completion) -> dict[str, str]:
    h = {"x-turnout-model": safe_header(c.model), "x-turnout-cost-usd": f"{c.cost_usd:.8f}"}
    if c.decision is not None:  # this request's own decision, never another's
        h["x-turnout-route"] = safe_header(c.decision.stage or "")
    if c.cached:
        h["x-turnout-cache"] = "hit"
    return h




async def _stream_body(run: Any, agen: Any, first: Any, chat: ChatIn) -> AsyncIterator[bytes]:
    """The SSE body after the first chunk: until the final chunk arrives the stream counts as cut —
    the run is ``cancelled`` and ``Budgeted`` bills the key the call's whole reservation (the
    provider may have generated it). An error after the first token is an error event, never a
    silent cut (the OpenAI client raises it)."""
    enc, status, out = ChunkEncoder(run.run_id, chat.model), "cancelled", []
    try:
        yield enc.delta({"role": "assistant", "content": ""})
        with run.scope():
            pending = first
            while pending is not None:
                if pending.delta:
                    out.append(pending.delta)
                    yield enc.content(pending.delta)
                if pending.tool_calls:
                    out += [f"[{d.name}]" for d in pending.tool_calls if d.name]
                    yield enc.tool_calls(pending.tool_calls)
                if pending.done:
                    status = "ok"
                    note(cost_usd=pending.cost_usd)  # a stream's cost is known at its end (the access log line waits for it)
                    yield enc.delta({}, finish_reason(pending.finish_reason))
                    if chat.include_usage:
                        yield enc.usage(pending.usage or Usage())
                    break
                try:
                    pending = await agen.__anext__()
                except StopAsyncIteration:
                    pending = None
        yield SSE_DONE
    except Exception as e:  # noqa: BLE001 - after the first token: an error event
        if not isinstance(e, TurnoutError):
            log.exception("stream of run %s failed", run.run_id)
        status = "error"
        yield sse(api_error(e).body())
    finally:
        with run.scope():
            await agen.aclose()  # settles the call's reservations now, not when it is collected
        run.finish(status, "".join(out))
