"""The OpenAI wire format at the gateway's edge: request bodies validated (pydantic) into turnout
``Request``s, with errors that name the field; unsupported features (tools, n > 1) are refused
clearly rather than silently ignored. And the other way: the one place completion bodies, stream
chunks and usage objects are encoded."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._types import Message, Request, ResponseFormat

__all__ = ["SSE_DONE", "ChatIn", "ChunkEncoder", "EmbeddingsIn", "WireError", "completion_body", "dumps", "finish_reason", "sse",
           "to_request", "usage_body", "user_text"]


class WireError(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


def _first_error(e: ValidationError) -> WireError:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return WireError(f"{loc}: {msg}" if loc else msg, loc or None)


def _validate(model: type[Any], body: Any) -> Any:
    if not isinstance(body, dict):
        raise WireError("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise _first_error(e) from None


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None

    def text(self, where: str) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        out = []
        for i, p in enumerate(self.content):
            if p.type != "text":
                raise WireError(f"{where}.content.{i}.type: only text parts are supported here, not {p.type!r}", f"{where}.content")
            out.append(p.text or "")
        return "".join(out)


class _JsonSchemaIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = "answer"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class _ResponseFormatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchemaIn | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields (user, metadata, store, ...) are accepted and ignored
    model: str = Field(min_length=1, max_length=200)
    messages: list[_MessageIn] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    response_format: _ResponseFormatIn | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None

    @staticmethod
    def parse(body: Any) -> ChatIn:
        c: ChatIn = _validate(ChatIn, body)
        if c.n is not None and c.n > 1:
            raise WireError("n > 1 is not supported; use a turnout vote workflow for several samples", "n")
        if c.tools:
            raise WireError("tools are not supported by this gateway yet", "tools")
        if isinstance(c.stop, list) and len(c.stop) > 4:
            raise WireError("stop: at most 4 sequences", "stop")
        return c

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def to_request(c: ChatIn) -> Request:
    msgs = []
    for i, m in enumerate(c.messages):
        role = "system" if m.role == "developer" else m.role
        if role == "tool":
            raise WireError(f"messages.{i}.role: tool messages are not supported yet", f"messages.{i}.role")
        msgs.append(Message(role, m.text(f"messages.{i}")))  # type: ignore[arg-type]
    rf = None
    if c.response_format is not None and c.response_format.type != "text":
        if c.response_format.type == "json_object":
            rf = ResponseFormat("json_object")
        else:
            js = c.response_format.json_schema
            if js is None or js.schema_ is None:
                raise WireError("response_format.json_schema.schema is required for type json_schema", "response_format")
            rf = ResponseFormat("json_schema", js.schema_, js.name, bool(js.strict) if js.strict is not None else True)
    stop = (c.stop,) if isinstance(c.stop, str) else tuple(c.stop or ())
    return Request(tuple(msgs), temperature=c.temperature, max_tokens=c.max_completion_tokens or c.max_tokens, stop=stop,
                   response_format=rf, seed=c.seed, top_p=c.top_p, logprobs=c.top_logprobs if c.logprobs else None)


def user_text(req: Request) -> str:
    return "\n".join(m.content for m in req.messages if m.role == "user")


def finish_reason(fr: str | None) -> str:
    return fr if fr in ("stop", "length", "content_filter", "tool_calls") else "stop"


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"

    @staticmethod
    def parse(body: Any) -> EmbeddingsIn:
        e: EmbeddingsIn = _validate(EmbeddingsIn, body)
        if isinstance(e.input, list) and not e.input:
            raise WireError("input: give at least one text", "input")
        if isinstance(e.input, list) and len(e.input) > 2048:
            raise WireError("input: at most 2048 texts per request", "input")
        return e

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


# -- encoders: turnout results -> OpenAI bodies and SSE events -----------------------------------------
try:
    import orjson

    def dumps(doc: Any) -> bytes:
        return orjson.dumps(doc)  # about 5x faster than json.dumps for these bodies
except ImportError:  # pragma: no cover - orjson is in the server extra
    import json

    def dumps(doc: Any) -> bytes:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def sse(doc: Any) -> bytes:
    return b"data: " + dumps(doc) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def usage_body(u: Any) -> dict[str, int]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.input_tokens + u.output_tokens}


def completion_body(c: Any, run_id: str, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{run_id}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": finish_reason(c.finish_reason),
                     "logprobs": None}],
        "usage": usage_body(c.usage),
    }


class ChunkEncoder:
    """The ``chat.completion.chunk`` events of one streamed answer."""

    def __init__(self, run_id: str, model: str) -> None:
        self.id, self.created, self.model = f"chatcmpl-{run_id}", int(time.time()), model

    def delta(self, delta: dict[str, Any], fin: str | None = None) -> bytes:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": fin, "logprobs": None}]})

    def usage(self, u: Any) -> bytes:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": usage_body(u)})

    def whole(self, text: str, fin: str = "stop") -> list[bytes]:
        """A finished answer replayed as a stream (a workflow's output)."""
        return [self.delta({"role": "assistant", "content": ""}), self.delta({"content": text}), self.delta({}, fin), SSE_DONE]
