"""Anthropic Messages API adapter on aiohttp (same session style as the OpenAI-compatible one).

JSON-schema output is done the Messages-API way: one tool whose ``input_schema`` is the schema and
``tool_choice`` forcing it; the tool input comes back as the completion's text (JSON).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from .._constants import ANTHROPIC_BASE_URL, ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT_S
from .._errors import BadResponse, ProviderUnavailable
from .._types import FREE, Completion, Price, Request, StreamChunk, Usage, estimate_tokens
from ._http import HTTPAdapter

__all__ = ["AnthropicModel"]

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "stop", "refusal": "content_filter"}


def anthropic_body(req: Request, model: str, stream: bool) -> dict[str, Any]:
    system = "\n\n".join(m.content for m in req.messages if m.role == "system")
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
    rf = req.response_format
    if rf is not None and rf.type != "text":
        schema = dict(rf.schema or {"type": "object"}) if rf.type == "json_schema" else {"type": "object"}
        body["tools"] = [{"name": rf.name, "description": "Return the answer in this structure.", "input_schema": schema}]
        body["tool_choice"] = {"type": "tool", "name": rf.name}
    if stream:
        body["stream"] = True
    return body


class AnthropicModel(HTTPAdapter):
    """Claude models through the Messages API. Key from ``api_key=`` or ``ANTHROPIC_API_KEY``."""

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
        try:
            blocks = doc["content"]
            parts: list[str] = []
            for b in blocks:
                if b.get("type") == "text":
                    parts.append(b.get("text", ""))
                elif b.get("type") == "tool_use":
                    parts.append(json.dumps(b.get("input", {})))
            text = "".join(parts)
            finish = _FINISH.get(doc.get("stop_reason") or "", "unknown")
            u = doc.get("usage") or {}
        except (KeyError, TypeError, AttributeError):
            raise BadResponse(f"unexpected response shape: {self._excerpt(json.dumps(doc))!r}", model=self.name) from None
        usage = Usage(
            int(u.get("input_tokens") or estimate_tokens(request.prompt_chars)),
            int(u.get("output_tokens") or (estimate_tokens(text) if text else 0)),
        )
        return Completion(
            text, self.name, finish, usage, self.price.cost(usage), latency, None, doc.get("id")  # type: ignore[arg-type]
        )

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        t0 = time.perf_counter()
        in_tok = out_tok = 0
        finish: str | None = None
        stopped = False
        async for event, doc in self._events(anthropic_body(request, self.model, True), request.timeout):
            kind = event or doc.get("type")
            if kind == "message_start":
                u = (doc.get("message") or {}).get("usage") or {}
                in_tok = int(u.get("input_tokens") or 0)
                out_tok = int(u.get("output_tokens") or 0)
            elif kind == "content_block_delta":
                d = doc.get("delta") or {}
                text = d.get("text") if d.get("type") == "text_delta" else d.get("partial_json")
                if text:
                    yield StreamChunk(text, model=self.name)
            elif kind == "message_delta":
                finish = _FINISH.get((doc.get("delta") or {}).get("stop_reason") or "", "unknown")
                out_tok = int((doc.get("usage") or {}).get("output_tokens") or out_tok)
            elif kind == "message_stop":
                stopped = True
                break
            elif kind == "error":
                err = doc.get("error") or {}
                raise ProviderUnavailable(f"provider sent an error mid-stream: {self._excerpt(str(err.get('message', err)))}", model=self.name)
        if not stopped:
            raise BadResponse("stream ended before message_stop", model=self.name)
        usage = Usage(in_tok, out_tok)
        yield StreamChunk("", True, finish or "stop", usage, self.price.cost(usage), time.perf_counter() - t0, self.name)  # type: ignore[arg-type]

