"""The turnout gateway: an OpenAI-compatible server in front of the catalog, the model router and the
workflows (``turnout serve``; ``pip install 'turnout[server]'``).

- ``POST /v1/chat/completions`` (JSON or SSE, the OpenAI wire format), ``GET /v1/models``,
  ``POST /v1/embeddings`` (the embedded MiniLM, float or base64). ``model`` names a catalog model,
  ``turnout/auto`` (the ``ModelRouter``: tier + compliance + upward failover) or
  ``workflow/NAME``. Headers ``x-turnout-model``, ``x-turnout-route``, ``x-turnout-cost-usd`` and
  ``x-turnout-run-id`` say who served it and what it cost.
- ``POST /v1/workflows/{name}/runs``, ``GET /v1/runs/{id}``, ``POST /v1/runs/{id}/feedback``.
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
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._errors import (
    BudgetExceeded,
    ComplianceError,
    ConfigError,
    LimitExceeded,
    TurnoutError,
)
from .._scope import spend_scope
from .._types import Completion, Request, Usage
from .._yaml import json_line
from ..store.base import _ACTIVE
from .errors import ApiError, api_error, safe_header
from .keys import ApiKey, KeyRing
from .limits import open_limits
from .wire import ChatIn, EmbeddingsIn, WireError, finish_reason, to_request, user_text

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("turnout.server")

AUTO = "turnout/auto"
EMBED_MODEL = "local-embed"
_ANON = ApiKey("anonymous", "anonymous", ("*",), ("*",))


@dataclass
class Gateway:
    """What the server serves. ``auth=False`` (loopback only) accepts requests without a key."""

    catalog: Any
    store: Any
    workflows: Mapping[str, Any] = field(default_factory=dict)
    auth: bool = True
    redis_url: str | None = None
    max_body: int = 2_000_000
    embedder: Any = None
    metrics: Any = None
    dashboard: bool = True
    # Host header values (without the port) this server answers; anything else is refused with 421,
    # so a web page cannot reach the gateway or its dashboard by DNS rebinding. Loopback names are
    # always allowed; add the names a reverse proxy or clients use (``turnout serve --allowed-host``).
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.keys = KeyRing(self.store)
        self.limits = open_limits(self.redis_url, self.store)
        self._router: Any = None
        if self.metrics is None:
            try:
                from ..store.metrics import Metrics

                self.metrics = Metrics()
            except ImportError:  # prometheus-client is an extra
                self.metrics = None
        self._models: dict[str, Any] = {}

    # -- models -----------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        names = list(self.catalog.names())
        if len(self.catalog.names()) > 0:
            names.append(AUTO)
        names += [f"workflow/{w}" for w in self.workflows]
        return names

    def model(self, name: str) -> Any:
        m = self._models.get(name)
        if m is None:
            if name == AUTO:
                from ..routing.model_router import ModelRouter

                if self._router is None:
                    from ..routing.model_router import ComplexityRules

                    a = self.catalog.auto
                    tiers = a.get("tiers")
                    order = list(tiers) if tiers else None
                    complexity = ComplexityRules(order, thresholds=a.get("thresholds"), hard_words=a.get("hard_words"),
                                                 name=f"{AUTO}.complexity") if order else None
                    self._router = ModelRouter(self.catalog, tiers=tiers, complexity=complexity, prefer=a.get("prefer", "cheapest"),
                                               min_tier=a.get("min_tier"), resolve=lambda n: self.model(n), name=AUTO)
                m = self._router.as_model()
            else:
                m = self.catalog.model(name, sink=self.metrics)
            self._models[name] = m
        return m

    async def aclose(self) -> None:
        await self.catalog.aclose()
        await self.limits.aclose()
        for wf in self.workflows.values():
            await wf.aclose()

    # -- auth -------------------------------------------------------------------------------------
    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not self.auth:
            return _ANON
        if not authorization:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' (create one with: turnout keys create)",
                           type="invalid_request_error", code="missing_api_key")
        scheme, _, secret = authorization.partition(" ")
        key = await self.keys.aauthenticate(secret.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise ApiError(401, "invalid API key (unknown or revoked)", type="invalid_request_error", code="invalid_api_key")
        return key

    # -- runs ----------------------------------------------------------------------------------------
    @contextmanager
    def in_run(self, run_id: str, key: ApiKey) -> Iterator[None]:
        token = _ACTIVE.set((self.store, run_id))
        meter = self.limits.meter(key)  # every model call inside reserves on the key's budget
        try:
            with spend_scope(run=run_id, key=key.key_id, team=key.team, meters=(meter,) if meter is not None else ()):
                yield
        finally:
            _ACTIVE.reset(token)

    def start_run(self, key: ApiKey, model: str, text: str) -> str:
        """A run per request, tagged with its key and team; a workflow's runs carry the workflow's name."""
        tags = {"key": key.key_id, "model": model, **({"team": key.team} if key.team else {})}
        name = model[9:] if model.startswith("workflow/") else "gateway"
        return self.store.start_run(name, text, tags=tags)  # type: ignore[no-any-return]


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
        return json_line(raw.decode("utf-8"))  # also refuses bodies nested too deeply (never a RecursionError)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None


def _parse(model: Any, body: Any) -> Any:
    """A wire body validated into ``model`` (``ChatIn``, ``EmbeddingsIn``); a 400 naming the field otherwise."""
    try:
        return model.parse(body)
    except WireError as e:
        raise ApiError(400, str(e), param=e.param) from None


def _completion_body(c: Completion, run_id: str, model: str) -> dict[str, Any]:
    u = c.usage
    return {
        "id": f"chatcmpl-{run_id}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": finish_reason(c.finish_reason),
                     "logprobs": None}],
        "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.input_tokens + u.output_tokens},
    }


try:
    import orjson

    def _dumps(doc: Any) -> bytes:
        return orjson.dumps(doc)
except ImportError:  # pragma: no cover - orjson is in the server extra
    def _dumps(doc: Any) -> bytes:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


class FastJSON(JSONResponse):
    """JSON via orjson (about 5x faster than json.dumps for these bodies)."""

    def render(self, content: Any) -> bytes:
        return _dumps(content)


def _sse(doc: Any) -> bytes:
    return b"data: " + _dumps(doc) + b"\n\n"


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

    @app.exception_handler(Exception)
    async def _unexpected(request: HttpRequest, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(api_error(e))

    def resolve_target(key: ApiKey, name: str) -> tuple[str, Any]:
        """("model", model) or ("workflow", workflow); 404 unknown, 403 outside the key's scope."""
        if name.startswith("workflow/"):
            wf = gw.workflows.get(name[9:])
            if wf is None:
                raise ApiError(404, f"unknown workflow {name[9:]!r}; known: {', '.join(sorted(gw.workflows)) or '(none)'}",
                               type="invalid_request_error", code="model_not_found", param="model")
            if not key.may_run_workflow(name[9:]):
                raise ApiError(403, f"key {key.name!r} may not run workflow {name[9:]!r}", type="permission_error",
                               code="model_not_allowed", param="model")
            return "workflow", wf
        if name != AUTO and name not in gw.catalog:
            raise ApiError(404, f"unknown model {name!r}; GET /v1/models lists the ones this key may use", code="model_not_found",
                           param="model")
        if not key.may_use_model(name):
            raise ApiError(403, f"key {key.name!r} may not use model {name!r}", type="permission_error", code="model_not_allowed",
                           param="model")
        return "model", gw.model(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        body = await _json_body(request, gw.max_body)
        chat = _parse(ChatIn, body)
        try:
            req = to_request(chat)
        except WireError as e:
            raise ApiError(400, str(e), param=e.param) from None
        kind, target = resolve_target(key, chat.model)
        text = user_text(req)
        await gw.limits.admit(key, _tokens(req))
        # the key's budget is charged call by call inside the model stack (Budgeted + the scope's meter)
        run_id = gw.start_run(key, chat.model, text)
        headers = {"x-turnout-run-id": run_id}
        if kind == "workflow":
            res = await _run_workflow(gw, target, text, key, run_id)
            headers.update({"x-turnout-model": safe_header(chat.model), "x-turnout-cost-usd": f"{res.cost_usd:.8f}"})
            if res.decisions:
                headers["x-turnout-route"] = safe_header(res.decisions[-1][1].route or "")
            if res.status == "error":
                gw.store.finish_run(run_id, status="error")
                raise _workflow_error(chat.model[9:], res, headers)
            c = Completion(res.text, chat.model, "stop", _usage(res), res.cost_usd, res.latency_s)
            gw.store.finish_run(run_id, status=res.status, output=c.text)
            if chat.stream:
                return StreamingResponse(_replay_stream(c, run_id, chat), media_type="text/event-stream", headers=headers)
            return FastJSON(_completion_body(c, run_id, chat.model), headers=headers)
        if not chat.stream:
            try:
                with gw.in_run(run_id, key):
                    c = await target.complete(req)
            except BaseException as e:
                gw.store.finish_run(run_id, status="error")
                if isinstance(e, Exception):
                    if not isinstance(e, TurnoutError):
                        log.exception("run %s failed unexpectedly", run_id)
                    raise api_error(e) from None
                raise
            gw.store.finish_run(run_id, status="ok", output=c.text)
            headers.update(_served(c, target))
            return FastJSON(_completion_body(c, run_id, chat.model), headers=headers)
        # streaming: the first chunk is awaited here, so a failure before any token is a proper HTTP error
        with gw.in_run(run_id, key):
            agen = target.stream(req).__aiter__()
            try:
                first = await agen.__anext__()
            except StopAsyncIteration:
                first = None
            except BaseException as e:
                gw.store.finish_run(run_id, status="error")
                if isinstance(e, Exception):
                    if not isinstance(e, TurnoutError):
                        log.exception("run %s failed unexpectedly", run_id)
                    raise api_error(e) from None
                raise
        served = first.decision if first is not None else None  # this request's own decision, never another's
        if served is not None:
            headers["x-turnout-route"] = safe_header(served.stage or "")
        headers["x-turnout-model"] = safe_header(first.model if first is not None and first.model else chat.model)

        async def events() -> AsyncIterator[bytes]:
            cid, created = f"chatcmpl-{run_id}", int(time.time())
            # until the final chunk arrives the stream counts as cut: the run is "cancelled", and
            # Budgeted bills the key the call's whole reservation (the provider may have generated it)
            status, out = "cancelled", []

            def chunk(delta: dict[str, Any], fin: str | None = None) -> bytes:
                return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": chat.model,
                             "choices": [{"index": 0, "delta": delta, "finish_reason": fin, "logprobs": None}]})

            try:
                yield chunk({"role": "assistant", "content": ""})
                with gw.in_run(run_id, key):
                    pending = first
                    while pending is not None:
                        if pending.delta:
                            out.append(pending.delta)
                            yield chunk({"content": pending.delta})
                        if pending.done:
                            status = "ok"
                            yield chunk({}, finish_reason(pending.finish_reason))
                            if chat.include_usage:
                                u = pending.usage or Usage()
                                yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": chat.model,
                                            "choices": [], "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                                                                     "total_tokens": u.input_tokens + u.output_tokens}})
                            break
                        try:
                            pending = await agen.__anext__()
                        except StopAsyncIteration:
                            pending = None
                yield b"data: [DONE]\n\n"
            except Exception as e:  # noqa: BLE001 - after the first token: an error event, never a silent cut
                if not isinstance(e, TurnoutError):
                    log.exception("stream of run %s failed", run_id)
                status = "error"
                err = api_error(e)
                yield _sse(err.body())
            finally:
                with gw.in_run(run_id, key):
                    await agen.aclose()  # settles the call's reservations now, not when it is collected
                gw.store.finish_run(run_id, status=status, output="".join(out))

        return StreamingResponse(events(), media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})

    @app.get("/v1/models")
    async def list_models(request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        names = [n for n in gw.model_names() if (key.may_run_workflow(n[9:]) if n.startswith("workflow/") else key.may_use_model(n))]
        if key.may_use_model(EMBED_MODEL):
            names.append(EMBED_MODEL)
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "turnout"} for n in names]}

    @app.post("/v1/embeddings")
    async def embeddings(request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        body = await _json_body(request, gw.max_body)
        e = _parse(EmbeddingsIn, body)
        if e.model != EMBED_MODEL:
            raise ApiError(404, f"unknown embedding model {e.model!r}; this gateway serves {EMBED_MODEL!r}", code="model_not_found",
                           param="model")
        if not key.may_use_model(EMBED_MODEL):
            raise ApiError(403, f"key {key.name!r} may not use model {EMBED_MODEL!r}", type="permission_error", code="model_not_allowed")
        if gw.embedder is None:
            from ..models import LocalEmbedder

            gw.embedder = LocalEmbedder()
        try:
            vecs = await gw.embedder.embed(e.inputs)
        except TurnoutError as err:
            raise api_error(err) from None
        data = []
        for i, v in enumerate(vecs):
            import numpy as np

            arr = np.asarray(v, dtype="<f4")
            emb: Any = base64.b64encode(arr.tobytes()).decode() if e.encoding_format == "base64" else [float(x) for x in arr]
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(max(1, len(t) // 4) for t in e.inputs)
        return {"object": "list", "data": data, "model": EMBED_MODEL, "usage": {"prompt_tokens": n, "total_tokens": n}}

    @app.post("/v1/workflows/{name}/runs")
    async def run_workflow(name: str, request: HttpRequest) -> Any:
        key = await gw.authenticate(request.headers.get("authorization"))
        body = await _json_body(request, gw.max_body)
        if not isinstance(body, dict) or "input" not in body:
            raise ApiError(400, 'send {"input": ...} (text or an object), optionally "tags"', param="input")
        kind, wf = resolve_target(key, f"workflow/{name}")
        text = body["input"] if isinstance(body["input"], str) else json.dumps(body["input"])
        await gw.limits.admit(key, max(1, len(text) // 4))
        run_id = gw.start_run(key, f"workflow/{name}", text)
        res = await _run_workflow(gw, wf, body["input"], key, run_id)  # each call charged to the key's budget
        gw.store.finish_run(run_id, status=res.status, output=res.text if res.output is not None else None)
        if res.status == "error" and _refusal(res.exception):
            raise _workflow_error(name, res, {"x-turnout-run-id": run_id})
        return {"run_id": run_id, "workflow": name, "output": res.output, **{k: v for k, v in res.summary().items() if k != "run_id"}}

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

    @app.get("/metrics")
    async def metrics() -> Any:
        if gw.metrics is None:
            raise ApiError(404, "metrics need prometheus-client: pip install 'turnout[metrics]'", type="not_found_error")
        return Response(gw.metrics.exposition(), media_type="text/plain; version=0.0.4")

    if gw.dashboard:
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

        @app.get("/runs/{run_id}", include_in_schema=False)
        async def dash_run(run_id: str) -> Any:
            html = await asyncio.to_thread(dashboard.run_detail, gw.store, run_id)
            if html is None:
                return HTMLResponse(f"<!doctype html><title>not found</title><p>no run {_esc(run_id)}</p>", status_code=404)
            return HTMLResponse(html)

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        problems = []
        if not getattr(gw.store, "connected", True):
            problems.append("trace store unreachable")
        r = getattr(gw.limits, "r", None)
        if r is not None:
            try:
                await r.ping()
            except Exception as e:  # noqa: BLE001
                problems.append(f"redis unreachable ({type(e).__name__})")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return {"status": "ready"}

    return _FastPath(app, chat_completions, error_response, ("localhost", "127.0.0.1", "::1", *gw.allowed_hosts))


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


def _esc(s: str) -> str:
    import html

    return html.escape(s)


def _tokens(req: Request) -> int:
    return max(1, req.prompt_chars // 4) + (req.max_tokens or 0)


def _usage(res: Any) -> Any:
    return Usage(res.input_tokens, res.output_tokens)


def _served(c: Completion, target: Any) -> dict[str, str]:
    h = {"x-turnout-model": safe_header(c.model), "x-turnout-cost-usd": f"{c.cost_usd:.8f}"}
    if c.decision is not None:  # this request's own decision, never another's
        h["x-turnout-route"] = safe_header(c.decision.stage or "")
    return h


def _refusal(e: BaseException | None) -> bool:
    """A workflow that failed on a budget, a rate or compliance: the client's to fix (4xx), not a 502."""
    return isinstance(e, (BudgetExceeded, LimitExceeded, ComplianceError))


def _workflow_error(name: str, res: Any, headers: dict[str, str]) -> ApiError:
    if _refusal(res.exception):
        e = api_error(res.exception)
        e.headers = {**(e.headers or {}), **headers}
        return e
    return ApiError(502, f"workflow {name!r} failed: {res.error}", type="api_error", code="workflow_error", headers=headers)


async def _run_workflow(gw: Gateway, wf: Any, input: Any, key: ApiKey, run_id: str) -> Any:
    with gw.in_run(run_id, key):
        return await wf.run(input)


async def _replay_stream(c: Completion, run_id: str, chat: ChatIn) -> AsyncIterator[bytes]:
    cid, created = f"chatcmpl-{run_id}", int(time.time())
    for delta, fin in (({"role": "assistant", "content": ""}, None), ({"content": c.text}, None), ({}, "stop")):
        yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": chat.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": fin, "logprobs": None}]})
    yield b"data: [DONE]\n\n"

