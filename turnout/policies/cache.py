"""Cached: the response cache, a policy like the others — a repeated request is answered without a call.

A request is looked up by an **exact** key: the sha256 of its normalised form (the model, every
turn with its text stripped, tool calls and results, the tools, tool_choice, temperature, top_p,
max_tokens, stop, seed, response format); ``metadata`` and ``timeout`` do not count. With
``semantic`` (a cosine-similarity threshold) a miss then looks for a cached request whose
everything-but-the-last-user-turn is identical and whose last user turn is that similar
(``ResponseCache.embedder`` embeds it; the embedded MiniLM by default).

What is never cached: a request that samples — ``temperature`` above 0, or not set, which samples
at the provider's default (1.0 for OpenAI and Anthropic) — unless its settings say
``sampled: true``; a request asking for logprobs; an answer that did not end with ``stop``,
``length`` or ``tool_calls`` (an error, a filter, a cut stream).

Who may see an entry: entries are partitioned by model and by caller (the scope's API key), so one
gateway key never receives an answer cached for another's request. In the catalog's stack the
cache sits *inside* the compliance gate, so a request the data policy refuses is refused before
the cache is looked at, and a redacted request is cached in its redacted form; a semantic hit is
only served when the new request carries exactly the data classes of the cached one.

A hit is traced as a call with no tokens, cost 0, ``cached=true`` and the cost it saved
(``saved_usd``); it takes no rate-limit or budget, since nothing is sent. Identical requests
in flight at once are sent once: the others wait for the first answer (``complete`` only).

Who opts in: the model (``policies: cache: {ttl, semantic, sampled}`` in the catalog) or the
caller (a gateway key created with ``--cache-ttl``, in the run's scope); the caller's settings
win. Backends (``turnout.policies.cache_backends``): ``MemoryCache`` (LRU with TTL, one
process), ``StoreCache`` (the SQLite/PostgreSQL store) and ``RedisCache`` (every gateway replica).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NamedTuple

from .._errors import ConfigError
from .._scope import current_scope
from .._types import Completion, Request, StreamChunk, ToolCall, ToolCallDelta, ToolCalls, Usage
from ..models.base import ChatModel
from .base import Opened, StreamEnd, Wrapper, call_info, drive, open_stream
from .cache_backends import CacheBackend, MemoryCache

__all__ = ["CacheSettings", "Cached", "ResponseCache", "request_key"]

CACHEABLE = ("stop", "length", "tool_calls")  # answers worth keeping: complete, not an error, filter or cut


class CacheSettings(NamedTuple):
    """Who opts in says how: ``ttl`` seconds an entry lives; ``semantic`` the cosine similarity
    (0-1) a near-identical last user turn must reach (None: exact matches only); ``sampled``
    also caches requests that sample (temperature above 0 or unset)."""

    ttl: float = 3600.0
    semantic: float | None = None
    sampled: bool = False

    @staticmethod
    def of(value: Any, where: str = "cache") -> CacheSettings | None:
        """From ``True`` (the defaults), a mapping (``ttl``, ``semantic``, ``sampled``), settings,
        or ``None``/``False`` (off). A bad value is a ``ConfigError`` naming ``where``."""
        if value is None or value is False:
            return None
        if value is True:
            return CacheSettings()
        if isinstance(value, CacheSettings):
            s = value
        elif isinstance(value, Mapping):
            extra = sorted(set(value) - set(CacheSettings._fields))
            if extra:
                raise ConfigError(f"{where}: unknown setting {extra[0]!r}; use ttl, semantic, sampled")
            try:
                s = CacheSettings(float(value.get("ttl", 3600.0)),
                                  None if value.get("semantic") is None else float(value["semantic"]), bool(value.get("sampled", False)))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}: {e}") from None
        else:
            raise ConfigError(f"{where}: expected true, false or a mapping of ttl, semantic, sampled; got {value!r}")
        if not s.ttl > 0:
            raise ConfigError(f"{where}: ttl must be > 0 seconds, got {s.ttl:g}")
        if s.semantic is not None and not 0 < s.semantic <= 1:
            raise ConfigError(f"{where}: semantic is a cosine similarity in (0, 1], got {s.semantic:g}")
        return s

    def takes(self, request: Request) -> bool:
        """Whether a request may be answered from (and kept in) the cache under these settings."""
        if request.logprobs:
            return False
        return self.sampled or request.temperature == 0


def _turns(request: Request, last_user: int | None = None) -> list[Any]:
    return [[m.role, "" if i == last_user else m.content.strip(), [list(c) for c in m.tool_calls], m.tool_call_id, m.name]
            for i, m in enumerate(request.messages)]


def _settings_of(request: Request) -> list[Any]:
    rf = request.response_format
    return [[t.function for t in request.tools], request.tool_choice, request.parallel_tool_calls, request.temperature,
            request.top_p, request.max_tokens, list(request.stop), request.seed,
            None if rf is None else [rf.type, rf.schema, rf.name, rf.strict]]


def _digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def request_key(model: str, request: Request) -> str:
    """The exact cache key of a request to ``model`` (see the module docstring for what counts)."""
    return _digest([model, _turns(request), _settings_of(request)])


def _last_user(request: Request) -> int | None:
    for i in range(len(request.messages) - 1, -1, -1):
        if request.messages[i].role == "user":
            return i
    return None


class _Entry(NamedTuple):
    text: str
    model: str
    finish_reason: str
    usage: Usage
    cost_usd: float
    tool_calls: tuple[ToolCall, ...]
    classes: tuple[str, ...]

    @staticmethod
    def of(c: Completion, classes: tuple[str, ...]) -> _Entry:
        return _Entry(c.text, c.model, c.finish_reason, c.usage, c.cost_usd, c.tool_calls, classes)

    def dumps(self) -> str:
        return json.dumps({"text": self.text, "model": self.model, "finish": self.finish_reason, "usage": list(self.usage),
                           "cost": self.cost_usd, "tools": [list(c) for c in self.tool_calls], "classes": list(self.classes)})

    @staticmethod
    def loads(s: str) -> _Entry:
        d = json.loads(s)
        return _Entry(d["text"], d["model"], d["finish"], Usage(*d["usage"]), float(d["cost"]), tuple(ToolCall(*c) for c in d["tools"]),
                      tuple(d["classes"]))

    def completion(self, latency: float) -> Completion:
        return Completion(self.text, self.model, self.finish_reason, self.usage, 0.0, latency,  # type: ignore[arg-type]
                          tool_calls=self.tool_calls, cached=True)


class _Index:
    """The semantic side of one namespace: the embedded last user turns of cached requests, by the
    digest of everything else, each with its exact key and data classes (newest last, bounded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.groups: OrderedDict[tuple[str, str], list[tuple[Any, str, tuple[str, ...]]]] = OrderedDict()

    def add(self, group: tuple[str, str], vec: Any, key: str, classes: tuple[str, ...]) -> None:
        g = self.groups.setdefault(group, [])
        g[:] = [x for x in g if x[1] != key][-(self.limit - 1):] + [(vec, key, classes)]
        self.groups.move_to_end(group)
        while len(self.groups) > self.limit:
            self.groups.popitem(last=False)

    def best(self, group: tuple[str, str], vec: Any, classes: tuple[str, ...], threshold: float) -> str | None:
        """The exact key of the most similar cached request at or above ``threshold`` with the same data classes."""
        best, key = threshold, None
        for v, k, cl in self.groups.get(group, ()):
            if cl != classes:
                continue
            sim = float(v @ vec)
            if sim >= best:
                best, key = sim, k
        return key


class ResponseCache:
    """One cache: a backend for the entries, the semantic index and the requests in flight.
    ``embedder`` (anything with ``async embed(texts)`` giving L2-normalised rows) is needed only
    for semantic matches; default the embedded MiniLM, made on first use."""

    def __init__(self, backend: CacheBackend | None = None, *, embedder: Any = None, index_limit: int = 10_000,
                 implicit: bool = False) -> None:
        self.backend: CacheBackend = backend if backend is not None else MemoryCache()
        self.implicit = implicit  # made because a model opted in, not configured: the gateway may replace it
        self._embedder = embedder
        self.index = _Index(index_limit)
        self.inflight: dict[tuple[str, str], asyncio.Future[Completion | None]] = {}

    def __repr__(self) -> str:
        return f"ResponseCache({self.backend!r})"

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from ..models.embedder import LocalEmbedder

            self._embedder = LocalEmbedder()
        return self._embedder

    async def get(self, ns: str, key: str) -> _Entry | None:
        raw = await self.backend.get(ns, key)
        return _Entry.loads(raw) if raw is not None else None

    async def put(self, ns: str, key: str, entry: _Entry, ttl: float) -> None:
        await self.backend.put(ns, key, entry.dumps(), ttl)

    async def aclose(self) -> None:
        await self.backend.aclose()


class Cached(Wrapper):
    """Answers repeated requests from ``cache`` (see the module docstring). ``settings``: the
    model's opt-in (None: cached only for callers who opt in); ``classes(request)``: the data
    classes the catalog's policy finds in a request (for semantic hits; None without a policy)."""

    def __init__(self, inner: ChatModel, cache: ResponseCache, settings: CacheSettings | None = None, *,
                 classes: Callable[[Request], Any] | None = None) -> None:
        super().__init__(inner)
        self.cache, self.settings, self.classes = cache, settings, classes

    def _active(self, request: Request) -> CacheSettings | None:
        st = current_scope().cache or self.settings
        return st if st is not None and st.takes(request) else None

    def _where(self, request: Request) -> tuple[str, str, tuple[str, ...]]:
        ns = f"{self.inner.name}|{current_scope().key or ''}"
        cl = tuple(sorted(self.classes(request))) if self.classes is not None else ()
        return ns, request_key(self.inner.name, request), cl

    async def _lookup(self, request: Request, st: CacheSettings, ns: str, key: str, cl: tuple[str, ...]) -> tuple[_Entry | None, Any]:
        """(the entry, the request's semantic (group, vector) to index it by on a miss)."""
        e = await self.cache.get(ns, key)
        if e is not None or st.semantic is None:
            return e, None
        u = _last_user(request)
        if u is None:
            return None, None
        group = (ns, _digest([self.inner.name, _turns(request, u), _settings_of(request)]))
        vec = (await self.cache.embedder.embed([request.messages[u].content.strip() or " "]))[0]
        near = self.cache.index.best(group, vec, cl, st.semantic)
        return (await self.cache.get(ns, near) if near is not None else None), (group, vec)

    def _served(self, e: _Entry, t0: float) -> Completion:
        info = call_info()
        if info is not None:
            info["cached"] = e.cost_usd
        return e.completion(time.perf_counter() - t0)

    async def _keep(self, st: CacheSettings, ns: str, key: str, cl: tuple[str, ...], sem: Any, e: _Entry) -> None:
        if e.finish_reason not in CACHEABLE:
            return
        await self.cache.put(ns, key, e, st.ttl)
        if sem is not None:
            self.cache.index.add(sem[0], sem[1], key, cl)

    async def complete(self, request: Request) -> Completion:
        st = self._active(request)
        if st is None:
            return await self.inner.complete(request)
        t0 = time.perf_counter()
        ns, key, cl = self._where(request)
        hit, sem = await self._lookup(request, st, ns, key, cl)
        if hit is not None:
            return self._served(hit, t0)
        lead = self.cache.inflight.get((ns, key))
        if lead is not None:  # the same request is being answered: wait for it rather than send it twice
            c = await asyncio.shield(lead)
            if c is not None:
                return self._served(_Entry.of(c, cl), t0)
        fut: asyncio.Future[Completion | None] = asyncio.get_running_loop().create_future()
        self.cache.inflight[(ns, key)] = fut
        c = None
        try:
            c = await self.inner.complete(request)
            await self._keep(st, ns, key, cl, sem, _Entry.of(c, cl))
            return c
        finally:
            if self.cache.inflight.get((ns, key)) is fut:
                del self.cache.inflight[(ns, key)]
            fut.set_result(c if c is not None and c.finish_reason in CACHEABLE else None)

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        if self._active(request) is None:  # not cached: the inner stream itself, no layer per chunk
            return self.inner.stream(request)
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        st = self._active(request)
        if st is None:
            return await open_stream(self.inner, request)
        t0 = time.perf_counter()
        ns, key, cl = self._where(request)
        hit, sem = await self._lookup(request, st, ns, key, cl)
        if hit is not None:
            replay = _replay(self._served(hit, t0))
            return await replay.__anext__(), replay, []
        first, rest, ends = await open_stream(self.inner, request)
        ends.append(_Keep(self, st, ns, key, cl, sem))
        return first, rest, ends


async def _replay(c: Completion) -> AsyncIterator[StreamChunk]:
    """A cached answer as a stream: its text, its tool calls, the final chunk (cost 0)."""
    if c.text:
        yield StreamChunk(c.text, model=c.model, cached=True)
    if c.tool_calls:
        yield StreamChunk(model=c.model, cached=True, tool_calls=tuple(ToolCallDelta(i, t.id, t.name, t.arguments)
                                                                       for i, t in enumerate(c.tool_calls)))
    yield StreamChunk(done=True, finish_reason=c.finish_reason, usage=c.usage, latency_s=c.latency_s, model=c.model, cached=True)


class _Keep(StreamEnd):
    """A streamed answer kept in the cache at its final chunk (before it is handed on): a stream cut
    or failed before it never reaches the cache."""

    each_chunk = True

    def __init__(self, owner: Cached, st: CacheSettings, ns: str, key: str, cl: tuple[str, ...], sem: Any) -> None:
        self.owner, self.st, self.ns, self.key, self.cl, self.sem = owner, st, ns, key, cl, sem
        self.parts: list[str] = []
        self.calls = ToolCalls()

    def each(self, chunk: StreamChunk) -> None:
        if chunk.delta:
            self.parts.append(chunk.delta)
        if chunk.tool_calls:
            self.calls.add(chunk.tool_calls)

    async def done(self, chunk: StreamChunk) -> None:
        if chunk.finish_reason in CACHEABLE:
            calls = self.calls.done(chunk.model) if self.calls else ()
            e = _Entry("".join(self.parts), chunk.model or self.owner.inner.name, chunk.finish_reason or "stop", chunk.usage or Usage(),
                       chunk.cost_usd, calls, self.cl)
            await self.owner._keep(self.st, self.ns, self.key, self.cl, self.sem, e)
