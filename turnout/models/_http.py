"""Shared aiohttp plumbing for the HTTP adapters: one session per adapter, error translation."""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import aclosing
from typing import Any, TypeVar

import aiohttp

from .. import _secrets
from .._constants import DEFAULT_CONNECT_TIMEOUT_S, ERROR_EXCERPT_CHARS
from .._errors import (
    AuthError,
    BadResponse,
    ContextLengthExceeded,
    InvalidRequest,
    MissingAPIKey,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    is_context_overflow,
)
from .._json import dumps, loads
from .._sync import register_session

T = TypeVar("T")

_LOOPBACK = ("127.", "localhost", "[::1]", "0.0.0.0")


# set by the pool when the connection a request goes out on was reused (see ``_Pool``)
_REUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("turnout_pooled_connection", default=False)


class _Pool(aiohttp.TCPConnector):
    """The connector, noting (in ``_REUSED``, within the calling task) when a request is handed a
    connection from the pool rather than a new one: only such a request may meet a connection the
    server closed while it sat idle, so only it is sent again."""

    async def _get(self, *args: Any, **kw: Any) -> Any:
        conn = await super()._get(*args, **kw)  # type: ignore[misc]
        if conn is not None:
            _REUSED.set(True)
        return conn


def is_loopback(url: str) -> bool:
    host = url.split("://", 1)[-1]
    return host.startswith(_LOOPBACK)


def resolve_key(
    name: str, base_url: str, api_key: str | None, api_key_env: str | None, trust_env: bool, require_key: bool | None
) -> str | None:
    """Argument beats environment; a key is required unless the endpoint is on loopback."""
    key = api_key
    if key is None and trust_env and api_key_env:
        key = os.environ.get(api_key_env) or None
    if require_key is None:
        require_key = not is_loopback(base_url)
    if require_key and not key:
        raise MissingAPIKey(name, api_key_env)
    _secrets.register(key)  # scrubbed from every error, row and log line from now on
    return key


def scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return _secrets.scrub(text)


def excerpt(body: bytes | str, secret: str | None) -> str:
    s = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    s = scrub(s, secret)
    s = s.replace("\n", " ").strip()
    return s[:ERROR_EXCERPT_CHARS] + ("…" if len(s) > ERROR_EXCERPT_CHARS else "")


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - time.time())


def error_for_status(status: int, body: bytes, headers: Mapping[str, str], model: str, secret: str | None) -> ProviderError:
    """Translate an HTTP error status into the turnout error tree (never echoing the key)."""
    detail = excerpt(body, secret)
    try:  # prefer the provider's own message when it sends one
        doc = loads(body)
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and err.get("message"):
            detail = excerpt(str(err["message"]), secret)
        elif isinstance(err, str):
            detail = excerpt(err, secret)
    except ValueError:
        pass
    msg = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if status == 429:
        return RateLimited(msg, model=model, status=status, retry_after=parse_retry_after(headers.get("Retry-After")))
    if status in (401, 403):
        return AuthError(msg, model=model, status=status)
    if status == 408:
        return ProviderTimeout(msg, model=model, status=status)
    if status >= 500 or status == 529:
        if headers.get("Retry-After"):
            err = ProviderUnavailable(msg, model=model, status=status)
            err.retry_after = parse_retry_after(headers.get("Retry-After"))  # type: ignore[attr-defined]
            return err
        return ProviderUnavailable(msg, model=model, status=status)
    if is_context_overflow(detail):
        return ContextLengthExceeded(msg, model=model, status=status)
    return InvalidRequest(msg, model=model, status=status)


def translate_transport(exc: BaseException, model: str, timeout: float | None) -> ProviderError:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return ProviderTimeout(f"no answer within {timeout}s", model=model)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ProviderUnavailable(f"response cut off: {type(exc).__name__}", model=model)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return ProviderUnavailable(f"connection failed: {type(exc).__name__}: {exc}", model=model)
    return ProviderError(f"{type(exc).__name__}: {exc}", model=model)


class HTTPClient:
    """One aiohttp session per adapter, created lazily inside the running loop.

    The connector's pool is sized to the concurrency in use (``pool_size``); a new session is made
    if the adapter is used from another event loop (``turnout.run_sync`` twice, for instance).
    Proxies are explicit (``proxy=``): aiohttp's ``trust_env`` looks up proxy variables and netrc
    in a worker thread on *every* request, which alone tripled the client CPU per call here.
    """

    def __init__(self, *, pool_size: int, timeout: float, proxy: str | None = None) -> None:
        self.pool_size = pool_size
        self.timeout = timeout
        self.proxy = proxy
        self.stale_retries = 0  # requests sent again because their pooled connection was found closed
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        s = self._session
        if s is None or self._loop is not loop:  # aclose() clears _session; nothing else closes it
            # limit_per_host stays 0: per-host accounting costs CPU on every request and an adapter
            # talks to one host anyway, so ``limit`` already is the per-host cap
            # keep idle connections for less time than common servers do (uvicorn and llama.cpp: 5 s),
            # so the pool does not hand out a connection the server is closing
            connector = _Pool(limit=self.pool_size, ttl_dns_cache=300, keepalive_timeout=4.0)
            s = aiohttp.ClientSession(
                connector=connector,
                # sock_connect, not connect: the latter arms a timer around every pool checkout
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=DEFAULT_CONNECT_TIMEOUT_S),
                trust_env=False,
                auto_decompress=True,
            )
            self._session, self._loop = s, loop
            register_session(loop, s)  # closed with run_sync's loop at exit, if that is its loop
        return s

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    async def _send(self, url: str, body: bytes, headers: Mapping[str, str], kw: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST on a pooled connection. A connection the server closed while it sat in the pool fails
        before any byte of an answer comes back (``ServerDisconnectedError``, a reset, or — llama.cpp's
        server after a stream — "Can not write request body"): the request
        never reached a handler, so it is sent once more at once, on another connection — what HTTP
        clients do for a stale keep-alive connection (aiohttp itself does it only for idempotent
        methods). Only a reused connection: one just opened that drops may have delivered the
        request. A refused connection, a timeout or a second failure is the caller's error."""
        _REUSED.set(False)
        try:
            return await self.session().post(url, data=body, headers=headers, **kw)
        except aiohttp.ClientConnectorError:
            raise
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if not _REUSED.get():
                raise  # a new connection dropped: the server may have the request — never sent twice
            self.stale_retries += 1
            return await self.session().post(url, data=body, headers=headers, **kw)

    async def post_json(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        model: str,
        timeout: float | None,
        secret: str | None,
        parse: Callable[[Any, float], T],
    ) -> T:
        """POST ``body``; return ``parse(json_doc, latency_s)``.

        Adapters return this coroutine directly from ``complete`` (no coroutine of their own), so a
        call costs one frame here instead of two on every resumption of the request.
        """
        t0 = time.perf_counter()
        # the session's default timeout covers the usual case; a per-request object only when asked
        kw: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout is not None else {}
        if self.proxy:
            kw["proxy"] = self.proxy
        try:
            async with await self._send(url, body, headers, kw) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_for_status(resp.status, raw, resp.headers, model, secret)
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError) as e:
            raise translate_transport(e, model, timeout if timeout is not None else self.timeout) from None
        try:
            doc = loads(raw)
        except ValueError:
            raise BadResponse(f"response is not JSON: {excerpt(raw, secret)!r}", model=model, status=resp.status) from None
        return parse(doc, time.perf_counter() - t0)

    async def post_sse(
        self, url: str, body: bytes, headers: Mapping[str, str], *, model: str, timeout: float | None, secret: str | None,
        end: bytes | None = None,
    ) -> AsyncIterator[tuple[str | None, Any]]:
        """Yield (event name, JSON data) for each event of a server-sent-event stream; ``timeout`` bounds
        each read. A data line equal to ``end`` (OpenAI's ``[DONE]``) yields ``(None, None)``; data that
        is not JSON is a ``BadResponse`` naming an excerpt (the key scrubbed). Lines are handled as bytes
        (the JSON codec reads bytes as they are): one generator from the socket to the adapter."""
        t = timeout if timeout is not None else self.timeout
        kw: dict[str, Any] = {"timeout": _read_timeout(t)}
        if self.proxy:
            kw["proxy"] = self.proxy
        try:
            # Streams share the pool: read to its end, the connection goes back to it (``release``);
            # left early (the caller stopped, a cancel, an error), it is closed, never reused with
            # unread bytes on it. A connection the server closed after a stream without saying so
            # (llama.cpp's server does) is caught by ``_send`` on its next use.
            resp = await self._send(url, body, headers, kw)
            ended = False
            try:
                if resp.status >= 400:
                    raise error_for_status(resp.status, await resp.read(), resp.headers, model, secret)
                event: str | None = None
                finished = False  # after ``end``, the rest of the body is read and dropped
                async with aclosing(_sse_lines(resp.content)) as reads:  # closed with this generator
                    async for lines in reads:
                        for line in lines:
                            if len(line) <= 1:  # b"" or b"\r": the end of an event (the most common line but one)
                                event = None
                            elif line.startswith(b"data:"):
                                if finished:
                                    continue
                                data = line[5:]
                                if len(data) < 24 and data.strip() == end:  # [DONE] is short; no JSON event is stripped for it
                                    finished = True
                                    yield None, None
                                    continue
                                try:
                                    doc = loads(data)
                                except ValueError:
                                    text = data.strip().decode("utf-8", "replace")
                                    raise BadResponse(f"stream event is not JSON: {excerpt(text, secret)!r}", model=model) from None
                                yield event, doc
                            elif line.startswith(b"event:"):
                                event = line[6:].decode("utf-8", "replace").strip()
                            elif not line.strip():
                                event = None
                            # comments (":") and other fields are ignored per the SSE spec
                ended = True
            finally:
                if ended:
                    resp.release()
                else:
                    resp.close()
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError) as e:
            raise translate_transport(e, model, t) from None


@functools.lru_cache(maxsize=64)
def _read_timeout(t: float) -> aiohttp.ClientTimeout:
    """A stream's timeout (each read, and the connect, bounded by ``t``): immutable, made once per value."""
    return aiohttp.ClientTimeout(total=None, sock_read=t, sock_connect=t)


async def _sse_lines(content: aiohttp.StreamReader) -> AsyncIterator[list[bytes]]:
    """The body's lines (without their newline), in lists of what each network read brought: one
    await per read instead of one per line (an event is two lines; a read brings several events)."""
    tail = b""
    async for piece in content.iter_any():
        lines = (tail + piece if tail else piece).split(b"\n")
        tail = lines.pop()  # after the last newline: the start of a line still coming
        if lines:
            yield lines
    if tail:
        yield [tail]  # a last line the server did not end


class HTTPAdapter:
    """What the HTTP adapters share: the model id and name, the price, the endpoint, the key (set in
    the auth headers, kept out of reprs and scrubbed from every message) and the pooled client."""

    def __init__(self, model: str, *, base_url: str, path: str, name: str | None, price: Any, api_key: str | None,
                 api_key_env: str | None, trust_env: bool, require_key: bool | None, pool_size: int, timeout: float,
                 proxy: str | None, headers: dict[str, str], auth: Callable[[str], dict[str, str]]) -> None:
        self.model = model
        self.name = name or model
        self.price = price
        self.base_url = base_url.rstrip("/")
        self._key = resolve_key(self.name, self.base_url, api_key, api_key_env, trust_env, require_key)
        self._url = self.base_url + path
        self._headers = {"Content-Type": "application/json", **headers, **(auth(self._key) if self._key else {})}
        self._http = HTTPClient(pool_size=pool_size, timeout=timeout, proxy=proxy)

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r})"

    def _excerpt(self, text: str) -> str:
        return excerpt(text, self._key)

    def _post(self, body: Mapping[str, Any], timeout: float | None, parse: Callable[[Any, float], T]) -> Coroutine[Any, Any, T]:
        """POST ``body`` as JSON; ``parse(doc, latency_s)`` builds the answer. A plain def handing back
        the HTTP coroutine: one coroutine frame per call, not two."""
        return self._http.post_json(self._url, dumps(body), self._headers, model=self.name, timeout=timeout,
                                    secret=self._key, parse=parse)

    def _events(self, body: Mapping[str, Any], timeout: float | None, *, end: str | None = None) -> AsyncIterator[tuple[str | None, Any]]:
        """POST ``body`` for a stream: each server-sent event as (event name, its JSON data); a data
        line equal to ``end`` yields ``(None, None)`` (see ``HTTPClient.post_sse``). A plain def
        handing back the client's generator: no layer of its own on every chunk."""
        return self._http.post_sse(self._url, dumps(body), self._headers, model=self.name, timeout=timeout,
                                   secret=self._key, end=end.encode() if end is not None else None)

    async def aclose(self) -> None:
        await self._http.aclose()
