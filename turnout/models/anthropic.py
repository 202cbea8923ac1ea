"""Anthropic Messages API adapter on aiohttp (same session style as the OpenAI-compatible one).

JSON-schema output is done the Messages-API way: one tool whose ``input_schema`` is the schema and
``tool_choice`` forcing it; the tool input comes back as the completion's text (JSON).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import aclosing
from typing import Any

from .._constants import ANTHROPIC_BASE_URL, ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT_S
from .._errors import BadResponse, ProviderUnavailable
from .._types import (
    FREE,
    Completion,
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
from ._http import HTTPAdapter

__all__ = ["AnthropicModel"]

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "stop", "refusal": "content_filter"}


def anthropic_messages(req: Request) -> list[dict[str, Any]]:
    """The turns as Messages-API messages: an assistant's tool calls as ``tool_use`` blocks, tool
    results as ``tool_result`` blocks of a user turn (consecutive results in one turn, as required)."""
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the tool_result blocks of the user turn being built
    for m in req.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            if results is None:
                results = []
                out.append({"role": "user", "content": results})
            results.append({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content})
            continue
        results = None
        if m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.args()} for c in m.tool_calls]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def anthropic_body(req: Request, model: str, stream: bool) -> dict[str, Any]:
    system = "\n\n".join(m.content for m in req.messages if m.role == "system")
    if any(m.role == "tool" or m.tool_calls for m in req.messages):
        msgs = anthropic_messages(req)
    else:
        msgs = [{"role": m.role, "content": m.content} for m in req.messages if m.role != "system"]
    body: dict[str, Any] = {
        "model": model,
        "messages": msgs,
        "max_tokens": req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = system
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.tools or req.tool_choice is not None:
        _tools(req, body)
    rf = req.response_format
    if rf is not None and rf.type != "text" and not req.tools:
        schema = dict(rf.schema or {"type": "object"}) if rf.type == "json_schema" else {"type": "object"}
        body["tools"] = [{"name": rf.name, "description": "Return the answer in this structure.", "input_schema": schema}]
        body["tool_choice"] = {"type": "tool", "name": rf.name}
    if stream:
        body["stream"] = True
    return body


def _tools(req: Request, body: dict[str, Any]) -> None:
    if req.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": dict(t.parameters)} for t in req.tools]
    tc = req.tool_choice
    choice: dict[str, Any] | None = None
    if tc is not None:
        choice = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}.get(tc) or {"type": "tool", "name": tc}
    if req.parallel_tool_calls is False and req.tools:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        body["tool_choice"] = choice


class AnthropicModel(HTTPAdapter):
    """Claude models through the Messages API. Key from ``api_key=`` or ``ANTHROPIC_API_KEY``."""

    provider = "anthropic"  # gen_ai.system in traces

    def __init__(
        self,
        model: str,
        *,
        base_url: str = ANTHROPIC_BASE_URL,
        api_key: str | None = None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        name: str | None = None,
        price: Price = FREE,
        timeout: float = DEFAULT_TIMEOUT_S,
        pool_size: int = DEFAULT_POOL_SIZE,
        require_key: bool | None = None,
        trust_env: bool = True,
        proxy: str | None = None,
    ) -> None:
        super().__init__(model, base_url=base_url, path="/v1/messages", name=name, price=price, api_key=api_key,
                         api_key_env=api_key_env, trust_env=trust_env, require_key=require_key, pool_size=pool_size,
                         timeout=timeout, proxy=proxy, headers={"anthropic-version": ANTHROPIC_VERSION}, auth=lambda k: {"x-api-key": k})

    def complete(self, request: Request) -> Coroutine[Any, Any, Completion]:
        return self._post(anthropic_body(request, self.model, False), request.timeout,
                          lambda doc, latency: self._parse(doc, request, latency))

    def _parse(self, doc: Any, request: Request, latency: float) -> Completion:
        tools = bool(request.tools)  # else a tool_use block is the structured-output answer (its JSON is the text)
        calls: list[ToolCall] = []
        try:
            blocks = doc["content"]
            parts: list[str] = []
            for b in blocks:
                if b.get("type") == "text":
                    parts.append(b.get("text", ""))
                elif b.get("type") == "tool_use" and tools:
                    calls.append(ToolCall(b["id"], b["name"], json.dumps(b.get("input", {}))))
                elif b.get("type") == "tool_use":
                    parts.append(json.dumps(b.get("input", {})))
            text = "".join(parts)
            finish = "tool_calls" if calls else _FINISH.get(doc.get("stop_reason") or "", "unknown")
            u = doc.get("usage") or {}
        except (KeyError, TypeError, AttributeError):
            raise BadResponse(f"unexpected response shape: {self._excerpt(json.dumps(doc))!r}", model=self.name) from None
        usage = Usage(
            int(u.get("input_tokens") or estimate_tokens(request.prompt_chars)),
            int(u.get("output_tokens") or (estimate_tokens(text) if text else 0)),
        )
        return Completion(text, self.name, finish, usage, self.price.cost(usage), latency, None, doc.get("id"),  # type: ignore[arg-type]
                          None, checked_calls(tuple(calls), self.name))

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        t0 = time.perf_counter()
        in_tok = out_tok = 0
        finish: str | None = None
        stopped = False
        tools = bool(request.tools)
        calls = ToolCalls()
        # closed at once when the loop ends: a connection whose body had ended is already back in the pool
        async with aclosing(self._events(anthropic_body(request, self.model, True), request.timeout)) as events:
            async for event, doc in events:
                kind = event or doc.get("type")
                if kind == "message_start":
                    u = (doc.get("message") or {}).get("usage") or {}
                    in_tok = int(u.get("input_tokens") or 0)
                    out_tok = int(u.get("output_tokens") or 0)
                elif kind == "content_block_start" and tools and (doc.get("content_block") or {}).get("type") == "tool_use":
                    b = doc["content_block"]
                    piece = (ToolCallDelta(int(doc.get("index", 0)), b.get("id"), b.get("name")),)
                    calls.add(piece)
                    yield StreamChunk("", model=self.name, tool_calls=piece)
                elif kind == "content_block_delta":
                    d = doc.get("delta") or {}
                    if tools and d.get("type") == "input_json_delta":
                        piece = (ToolCallDelta(int(doc.get("index", 0)), arguments=d.get("partial_json") or ""),)
                        calls.add(piece)
                        yield StreamChunk("", model=self.name, tool_calls=piece)
                        continue
                    text = d.get("text") if d.get("type") == "text_delta" else d.get("partial_json")
                    if text:
                        yield StreamChunk(text, model=self.name)
                elif kind == "message_delta":
                    finish = _FINISH.get((doc.get("delta") or {}).get("stop_reason") or "", "unknown")
                    out_tok = int((doc.get("usage") or {}).get("output_tokens") or out_tok)
                elif kind == "message_stop":
                    stopped = True  # the answer is complete: nothing after it is waited for
                    break
                elif kind == "error":
                    err = doc.get("error") or {}
                    raise ProviderUnavailable(f"provider sent an error mid-stream: {self._excerpt(str(err.get('message', err)))}", model=self.name)
        if not stopped:
            raise BadResponse("stream ended before message_stop", model=self.name)
        if calls:
            calls.done(self.name)
            finish = "tool_calls"
        usage = Usage(in_tok, out_tok)
        yield StreamChunk("", True, finish or "stop", usage, self.price.cost(usage), time.perf_counter() - t0, self.name)  # type: ignore[arg-type]

