"""OpenAI-compatible chat adapter on aiohttp: OpenAI, vLLM, Ollama, llama.cpp server, OpenRouter, LM Studio.

aiohttp rather than httpx or the openai SDK: at 1000 calls / 64 concurrent on this project's
machine, raw aiohttp costs ~260 µs of client CPU a call, httpx 0.28 ~10,000 µs, the openai SDK
~2,200 µs (see docs/benchmarks.md). Behaviour (retries, limits, tracing) lives in policies, not here.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import aclosing
from typing import Any

from .._constants import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT_S, OPENAI_BASE_URL
from .._errors import BadResponse
from .._json import Fragment
from .._secrets import register_headers
from .._types import (
    FREE,
    TOOL_CHOICES,
    Completion,
    Message,
    Price,
    Request,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    ToolCalls,
    Usage,
    checked_calls,
    estimate_tokens,
)
from ._http import HTTPAdapter, excerpt

__all__ = ["OpenAICompatible"]


def tool_call_dicts(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls in the OpenAI wire format (requests upstream and the gateway's answers alike)."""
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def openai_message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.tool_calls:
        return {"role": m.role, "content": m.content or None, "tool_calls": tool_call_dicts(m.tool_calls)}
    return {"role": m.role, "content": m.content}


def openai_tools(req: Request, body: dict[str, Any]) -> None:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` of ``req`` into ``body``."""
    if req.tools:
        # each tool's schema was encoded once, when the Tool was made: spliced, not encoded again
        body["tools"] = [{"type": "function", "function": Fragment(t.text)} for t in req.tools]
    tc = req.tool_choice
    if tc is not None:
        body["tool_choice"] = tc if tc in TOOL_CHOICES else {"type": "function", "function": {"name": tc}}
    if req.parallel_tool_calls is not None and req.tools:
        body["parallel_tool_calls"] = req.parallel_tool_calls


def openai_body(req: Request, model: str, stream: bool) -> dict[str, Any]:
    """The chat-completions body of ``req``, for ``turnout._json.dumps``: tool schemas in it are
    ``Fragment``s (JSON encoded once, with the ``Tool``), which the stdlib ``json`` cannot encode."""
    msgs = [openai_message(m) if m.tool_calls or m.role == "tool" else {"role": m.role, "content": m.content} for m in req.messages]
    body: dict[str, Any] = {"model": model, "messages": msgs}
    if req.tools or req.tool_choice is not None:
        openai_tools(req, body)
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.stop:
        body["stop"] = list(req.stop)
    if req.seed is not None:
        body["seed"] = req.seed
    if req.top_p is not None:
        body["top_p"] = req.top_p
    rf = req.response_format
    if rf is not None and rf.type != "text":
        if rf.type == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": rf.name, "schema": dict(rf.schema or {}), "strict": rf.strict},
            }
        else:
            body["response_format"] = {"type": "json_object"}
    if req.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = req.logprobs
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls"}


def parse_logprobs(choice: dict[str, Any]) -> list[tuple[str, float, tuple[tuple[str, float], ...]]] | None:
    lp = choice.get("logprobs")
    if not isinstance(lp, dict) or not isinstance(lp.get("content"), list):
        return None
    out = []
    for item in lp["content"]:
        alts = tuple((a.get("token", ""), float(a.get("logprob", 0.0))) for a in item.get("top_logprobs") or ())
        out.append((item.get("token", ""), float(item.get("logprob", 0.0)), alts))
    return out


def parse_tool_calls(raw: Any, name: str) -> tuple[ToolCall, ...]:
    """``message.tool_calls`` of an OpenAI answer; a call without a name, or whose arguments are not
    a JSON object, is a ``BadResponse`` naming the tool (never dropped)."""
    try:
        calls = tuple(ToolCall(c.get("id") or f"call_{i}", c["function"]["name"], c["function"].get("arguments") or "{}")
                      for i, c in enumerate(raw))
    except (KeyError, TypeError, AttributeError):
        raise BadResponse(f"unexpected tool_calls shape: {excerpt(json.dumps(raw), None)!r}", model=name) from None
    return checked_calls(calls, name)


def parse_openai_completion(doc: Any, req: Request, name: str, price: Price, latency: float) -> Completion:
    try:
        choice = doc["choices"][0]
        msg = choice["message"]
        text = msg["content"] or ""
        finish = _FINISH.get(choice.get("finish_reason"), "unknown")
        u = doc.get("usage")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise BadResponse(f"unexpected response shape: {excerpt(json.dumps(doc), None)!r}", model=name) from None
    calls = parse_tool_calls(msg["tool_calls"], name) if msg.get("tool_calls") else ()
    if u and "prompt_tokens" in u and "completion_tokens" in u:
        usage = Usage(int(u["prompt_tokens"]), int(u["completion_tokens"]))
    else:  # the documented estimate when a server sends no usage
        usage = Usage(estimate_tokens(req.prompt_chars), estimate_tokens(text) if text else 0)
    cost = (usage.input_tokens * price.input_per_m + usage.output_tokens * price.output_per_m) / 1e6
    lp = parse_logprobs(choice) if "logprobs" in choice else None
    if not calls:
        return Completion(text, name, finish, usage, cost, latency, lp, doc.get("id"))  # type: ignore[arg-type]
    return Completion(text, name, "tool_calls", usage, cost, latency, lp, doc.get("id"), None, calls)


class OpenAICompatible(HTTPAdapter):
    """A chat model behind any OpenAI-compatible ``/chat/completions`` endpoint.

    The key comes from ``api_key=`` or, unless ``trust_env=False``, from ``api_key_env``. A key is
    required unless the endpoint is on loopback (local servers rarely want one); pass
    ``require_key=`` to override.
    """

    provider = "openai"  # gen_ai.system in traces: the API it speaks

    def __init__(
        self,
        model: str,
        *,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        name: str | None = None,
        price: Price = FREE,
        timeout: float = DEFAULT_TIMEOUT_S,
        pool_size: int = DEFAULT_POOL_SIZE,
        require_key: bool | None = None,
        headers: dict[str, str] | None = None,
        trust_env: bool = True,
        proxy: str | None = None,
    ) -> None:
        register_headers(headers)  # their values are scrubbed from every message, like the key
        super().__init__(model, base_url=base_url, path="/chat/completions", name=name, price=price, api_key=api_key,
                         api_key_env=api_key_env, trust_env=trust_env, require_key=require_key, pool_size=pool_size,
                         timeout=timeout, proxy=proxy, headers=dict(headers or {}), auth=lambda k: {"Authorization": f"Bearer {k}"})
    def complete(self, request: Request) -> Coroutine[Any, Any, Completion]:
        name, price = self.name, self.price
        return self._post(openai_body(request, self.model, False), request.timeout,
                          lambda doc, latency: parse_openai_completion(doc, request, name, price, latency))

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        t0 = time.perf_counter()
        finish: str | None = None
        usage: Usage | None = None
        n_chars = 0
        done = False
        calls = ToolCalls()
        name = self.name
        # closed at once when this loop ends: a connection whose body had ended is back in the pool
        # already (aiohttp releases it at the body's end), one still open is closed, never reused
        async with aclosing(self._events(openai_body(request, self.model, True), request.timeout, end="[DONE]")) as events:
            async for _event, doc in events:
                if doc is None:
                    done = True  # [DONE]: the answer is complete; nothing after it is waited for
                    break
                if type(doc) is not dict:
                    continue
                choices = doc.get("choices")
                if not choices:
                    if "error" in doc:
                        raise BadResponse(f"provider sent an error mid-stream: {self._excerpt(json.dumps(doc['error']))}", model=name)
                    u = doc.get("usage")
                    if u:
                        usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
                    continue
                if doc.get("usage"):  # some servers put the usage on the last chunk with choices
                    u = doc["usage"]
                    usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
                ch = choices[0]
                d = ch.get("delta") or {}
                delta = d.get("content")
                fr = ch.get("finish_reason")
                if fr:
                    finish = _FINISH.get(fr, "unknown")
                if delta:
                    n_chars += len(delta)
                    yield StreamChunk(delta, False, None, None, 0.0, 0.0, name)
                if d.get("tool_calls"):
                    pieces = self._tool_deltas(d["tool_calls"])
                    calls.add(pieces)
                    n_chars += sum(len(p.arguments) + len(p.name or "") for p in pieces)
                    yield StreamChunk("", model=name, tool_calls=pieces)
        if not done and finish is None:
            raise BadResponse("stream ended before the answer was complete (no finish_reason, no [DONE])", model=self.name)
        if calls:
            calls.done(self.name)  # each call's arguments must be JSON: reported, not passed on broken
            finish = "tool_calls"
        if usage is None:
            usage = Usage(estimate_tokens(request.prompt_chars), estimate_tokens(n_chars) if n_chars else 0)
        yield StreamChunk(
            "", True, finish or "stop", usage, self.price.cost(usage), time.perf_counter() - t0, self.name  # type: ignore[arg-type]
        )

    def _tool_deltas(self, raw: Any) -> tuple[ToolCallDelta, ...]:
        try:
            return tuple(ToolCallDelta(int(t.get("index", 0)), t.get("id"), (t.get("function") or {}).get("name"),
                                       (t.get("function") or {}).get("arguments") or "") for t in raw)
        except (TypeError, ValueError, AttributeError):
            raise BadResponse(f"unexpected tool_calls delta: {self._excerpt(json.dumps(raw))!r}", model=self.name) from None

