"""What the gateway serves and the one lifecycle every request goes through.

``Gateway`` holds the catalog, the store, the workflows, the keys and the limits, and resolves a
request's ``model`` (a catalog model, ``turnout/auto`` or ``workflow/NAME``) inside the calling
key's scope. ``async with gateway.request_run(key, model, text, tokens=...) as run`` is the
request's lifecycle, the same for every route: the key's rate is admitted, the run is opened with
``open_run`` (the one lifecycle every door uses; tagged with key and team, the key's budget as a
meter), ``run.scope()`` is entered around each step of the model or
workflow call (traces are attributed to the run; the key's budget is charged call by call by
``Budgeted``, through the scope's meter), and the run is finished exactly once — ``error`` when the
block raises, else the status and output the route set. A stream hands the finish to its body
with ``run.detach()`` and calls ``run.finish(...)`` when the last chunk is out or the client left.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._constants import DEFAULT_EMBEDDER
from .._errors import BudgetExceeded, ComplianceError, DeadlineExceeded, LimitExceeded
from .._scope import OpenRun, open_run
from ..policies.cache import ResponseCache
from ..policies.cache_backends import MemoryCache, RedisCache
from .access import note
from .errors import ApiError, api_error
from .keys import ApiKey, KeyRing
from .limits import open_limits

if TYPE_CHECKING:
    from ..store.base import Store

__all__ = ["AUTO", "EMBED_MODEL", "Gateway", "RequestRun"]

AUTO = "turnout/auto"
EMBED_MODEL = "local-embed"
_ANON = ApiKey("anonymous", "anonymous", ("*",), ("*",))


class RequestRun:
    """One request's run (see the module docstring): an ``OpenRun`` with the key it serves."""

    __slots__ = ("gw", "key", "run")

    def __init__(self, gw: Gateway, key: ApiKey, run: OpenRun) -> None:
        self.gw, self.key, self.run = gw, key, run

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def status(self) -> str:
        return self.run.status

    @status.setter
    def status(self, v: str) -> None:
        self.run.status = v

    @property
    def output(self) -> str | None:
        return self.run.output

    @output.setter
    def output(self, v: str | None) -> None:
        self.run.output = v

    def scope(self) -> Any:
        """The run, key and team in scope: calls are traced to this run and charged to the key."""
        return self.run.scope()

    def detach(self) -> None:
        """The response outlives the handler (a stream): its body calls ``finish``."""
        self.run.detach()

    def finish(self, status: str, output: str | None = None) -> None:
        self.run.finish(status, output)

    async def workflow(self, wf: Any, input: Any) -> Any:
        with self.scope():
            res = await wf.run(input)
        self.status, self.output = res.status, res.text if res.output is not None else None
        note(decisions=[(f"{wf.name}/{step}", d) for step, d in res.decisions], cost_usd=res.cost_usd,
             escalations=[e["queue"] for e in res.escalations if e.get("queue")])
        return res


@dataclass
class Gateway:
    """What the server serves. ``auth=False`` (loopback only) accepts requests without a key."""

    catalog: Any
    store: Store
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
    access_log: Any = None  # an ``AccessLog`` (``turnout serve`` has one on by default), or None

    def __post_init__(self) -> None:
        self.keys = KeyRing(self.store)
        self.limits = open_limits(self.redis_url, self.store)
        catalogs = self._catalogs()
        # one response cache for every catalog served (keys may opt in): in Redis with --redis, so every
        # replica answers from it; a catalog's own cache: section is kept
        self.cache = ResponseCache(RedisCache(client=self.limits.accounts.r) if self.limits.shared else MemoryCache())
        for cat in catalogs:
            if self.limits.shared:  # the catalog's budgets and rate limits too: one limit for every replica
                cat.share(self.limits.accounts, self.limits.buckets)
            cat.use_cache(self.cache, store=self.store)
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
        if names:
            names.append(AUTO)
        return names + [f"workflow/{w}" for w in self.workflows]

    def embedder_names(self) -> list[str]:
        """The embedding models served: the embedded MiniLM as ``local-embed``, and the catalog's ``embedders:``."""
        names = getattr(self.catalog, "embedder_names", None)  # a catalog-like object without embedders serves local-embed
        return [EMBED_MODEL, *(n for n in (names() if names is not None else ()) if n != DEFAULT_EMBEDDER)]

    def embedding_model(self, name: str) -> Any:
        """The encoder behind an embedding model name (KeyError when there is none)."""
        if name == EMBED_MODEL:
            if self.embedder is None:
                if hasattr(self.catalog, "embedder"):
                    self.embedder = self.catalog.embedder(DEFAULT_EMBEDDER)
                else:
                    from ..models import LocalEmbedder

                    self.embedder = LocalEmbedder()
            return self.embedder
        if name not in self.embedder_names():
            raise KeyError(name)
        return self.catalog.embedder(name)  # under the catalog's policies: compliance, budgets, its limits

    def model(self, name: str) -> Any:
        m = self._models.get(name)
        if m is None:
            m = self._models[name] = self._auto() if name == AUTO else self.catalog.model(name, sink=self.metrics)
        return m

    def _auto(self) -> Any:
        if self._router is None:
            from ..routing.model_router import build_model_router

            self._router = build_model_router(self.catalog.auto, self.catalog, name=AUTO, resolve=self.model)
        return self._router.as_model()

    def target(self, key: ApiKey, name: str) -> tuple[str, Any]:
        """("model", model) or ("workflow", workflow); 404 unknown, 403 outside the key's scope."""
        if name.startswith("workflow/"):
            wf = self.workflows.get(name[9:])
            if wf is None:
                raise ApiError(404, f"unknown workflow {name[9:]!r}; known: {', '.join(sorted(self.workflows)) or '(none)'}",
                               type="invalid_request_error", code="model_not_found", param="model")
            if not key.may_run_workflow(name[9:]):
                raise ApiError(403, f"key {key.name!r} may not run workflow {name[9:]!r}", type="permission_error",
                               code="model_not_allowed", param="model")
            return "workflow", wf
        if name != AUTO and name not in self.catalog:
            raise ApiError(404, f"unknown model {name!r}; GET /v1/models lists the ones this key may use", code="model_not_found",
                           param="model")
        if not key.may_use_model(name):
            raise ApiError(403, f"key {key.name!r} may not use model {name!r}", type="permission_error", code="model_not_allowed",
                           param="model")
        return "model", self.model(name)

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
        # the key by its id (never its secret): the access log's and the metrics' label; its rates for
        # the x-ratelimit-* headers of a response that never reached admission (a 404, a 400)
        note(key=key.key_id, team=key.team, rates=lambda: self.limits.remaining(key))
        return key

    async def budgets(self) -> list[tuple[str, float, float]]:
        """``(name, limit, spent + reserved)`` of every budget in its current window: the keys' seen by
        this process and the catalogs' (``/metrics`` reads them when scraped)."""
        controls = [*self.limits.meters(), *{id(c.spend): c.spend for c in self._catalogs() if c.spend is not None}.values()]
        out = []
        for ctl in controls:
            for st in await ctl.status():
                out.append((st.budget.name + (f" [{st.member}]" if st.member else ""), st.limit_usd, st.spent_usd + st.reserved_usd))
        return out

    def _catalogs(self) -> list[Any]:
        return list({id(c): c for c in [self.catalog, *(getattr(w, "catalog", None) for w in self.workflows.values())]
                     if c is not None}.values())

    # -- the request lifecycle -----------------------------------------------------------------------
    @asynccontextmanager
    async def request_run(self, key: ApiKey, model: str, text: str, *, tokens: int,
                          deadline: float | None = None) -> AsyncIterator[RequestRun]:
        """Admit the key's rate, start the run, finish it once (see the module docstring)."""
        await self.limits.admit(key, tokens)
        tags = {"key": key.key_id, "model": model, **({"team": key.team} if key.team else {})}
        name = model[9:] if model.startswith("workflow/") else "gateway"  # a workflow's runs carry its name
        meter = self.limits.meter(key)
        with open_run(self.store, name, text, tags=tags, meters=(meter,) if meter is not None else (), deadline=deadline,
                      cache=key.cache) as run:
            note(run_id=run.run_id)
            yield RequestRun(self, key, run)


def refusal(e: BaseException | None) -> bool:
    """A workflow that failed on a budget, a rate, compliance (the client's to fix: 4xx) or the
    request's own deadline (504): answered with that error, not as a 502 or a run that failed."""
    return isinstance(e, (BudgetExceeded, LimitExceeded, ComplianceError, DeadlineExceeded))


def workflow_error(name: str, res: Any, headers: Mapping[str, str]) -> ApiError:
    if refusal(res.exception):
        e = api_error(res.exception)
        e.headers = {**e.headers, **headers}
        return e
    return ApiError(502, f"workflow {name!r} failed: {res.error}", type="api_error", code="workflow_error", headers=headers)
