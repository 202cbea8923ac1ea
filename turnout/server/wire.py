"""The OpenAI wire format at the gateway's edge: request bodies validated (pydantic) into turnout
``Request``s — tools, tool choice, tool calls and tool results included — with errors that name
the field; what cannot be honoured is refused clearly rather than silently ignored. And the other
way: the one place completion bodies (tool calls, logprobs), stream chunks and usage objects are
encoded."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._errors import ConfigError
from .._json import dumps
from .._types import TOOL_CHOICES, Message, Request, ResponseFormat, Tool, ToolCall
from ..models.openai import tool_call_dicts

__all__ = ["SSE_DONE", "ChatIn", "ChunkEncoder", "EmbeddingsIn", "WireError", "completion_body", "conversation_text", "dumps",
           "finish_reason", "logprobs_body", "sse", "to_request", "usage_body", "user_text"]


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


class _FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    arguments: str = "{}"


class _ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: _FunctionCallIn


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None
    tool_calls: list[_ToolCallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None

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


class _FunctionIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class _ToolIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: _FunctionIn


class _NamedChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class _ToolChoiceIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: _NamedChoice


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
    n: int | None = Field(None, ge=1, le=16)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    response_format: _ResponseFormatIn | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[_ToolIn] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | _ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None

    @staticmethod
    def parse(body: Any) -> ChatIn:
        c: ChatIn = _validate(ChatIn, body)
        if c.n is not None and c.n > 1 and c.stream:
            raise WireError("n > 1 is served for whole answers only, not with stream: true", "n")
        if c.n is not None and c.n > 1 and c.model.startswith("workflow/"):
            raise WireError("n > 1 is for models; a workflow answers once (use a vote step for several samples)", "n")
        if isinstance(c.stop, list) and len(c.stop) > 4:
            raise WireError("stop: at most 4 sequences", "stop")
        return c

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _message(i: int, m: _MessageIn) -> Message:
    role = "system" if m.role == "developer" else m.role
    text = m.text(f"messages.{i}")
    if role == "tool":
        if not m.tool_call_id:
            raise WireError(f"messages.{i}.tool_call_id: a tool message answers a call: give its id", f"messages.{i}.tool_call_id")
        return Message("tool", text, (), m.tool_call_id, m.name)
    if m.tool_calls:
        if role != "assistant":
            raise WireError(f"messages.{i}.tool_calls: only an assistant message carries tool calls", f"messages.{i}.tool_calls")
        return Message("assistant", text, tuple(ToolCall(t.id, t.function.name, t.function.arguments) for t in m.tool_calls))
    return Message(role, text)  # type: ignore[arg-type]


def _tools(c: ChatIn) -> dict[str, Any]:
    if not c.tools and c.tool_choice is None:
        return {}
    try:
        tools = tuple(Tool(t.function.name, t.function.description, t.function.parameters, bool(t.function.strict)) for t in c.tools or ())
    except ConfigError as e:
        raise WireError(f"tools: {e}", "tools") from None
    tc = c.tool_choice if isinstance(c.tool_choice, str) or c.tool_choice is None else c.tool_choice.function.name
    if tc is not None and tc not in TOOL_CHOICES and tc not in {t.name for t in tools}:
        raise WireError(f"tool_choice: {tc!r} is not one of the request's tools", "tool_choice")
    return {"tools": tools, "tool_choice": tc, "parallel_tool_calls": c.parallel_tool_calls}


def to_request(c: ChatIn) -> Request:
    msgs = [_message(i, m) for i, m in enumerate(c.messages)]
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
    try:
        return Request(tuple(msgs), temperature=c.temperature, max_tokens=c.max_completion_tokens or c.max_tokens, stop=stop,
                       response_format=rf, seed=c.seed, top_p=c.top_p, logprobs=(c.top_logprobs or 1) if c.logprobs else None,
                       **_tools(c))
    except ConfigError as e:
        raise WireError(str(e), "tool_choice" if "tool_choice" in str(e) else "tools") from None


def user_text(req: Request) -> str:
    return "\n".join(m.content for m in req.messages if m.role == "user")


def conversation_text(req: Request) -> str:
    """The whole conversation as the run's input: each turn ``role: text``, tool calls by name and
    arguments, tool results under their tool's name."""
    out = []
    for m in req.messages:
        if m.role == "tool":
            out.append(f"tool {m.name or m.tool_call_id}: {m.content}")
            continue
        if m.content or not m.tool_calls:
            out.append(f"{m.role}: {m.content}")
        out += [f"{m.role} calls {c.name}({c.arguments})" for c in m.tool_calls]
    return "\n".join(out)


def finish_reason(fr: str | None) -> str:
    return fr if fr in ("stop", "length", "content_filter", "tool_calls") else "stop"


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

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
def sse(doc: Any) -> bytes:
    return b"data: " + dumps(doc) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def usage_body(u: Any) -> dict[str, int]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.input_tokens + u.output_tokens}


def logprobs_body(lp: Any) -> dict[str, Any] | None:
    """A completion's per-token log-probabilities in the OpenAI shape (None when the model gave none)."""
    if not lp:
        return None
    return {"content": [{"token": t, "logprob": p, "bytes": list(t.encode()), "top_logprobs": [
        {"token": a, "logprob": ap, "bytes": list(a.encode())} for a, ap in alts]} for t, p, alts in lp]}


def message_body(c: Any) -> dict[str, Any]:
    if c.tool_calls:
        return {"role": "assistant", "content": c.text or None, "tool_calls": tool_call_dicts(c.tool_calls)}
    return {"role": "assistant", "content": c.text}


def completion_body(c: Any, run_id: str, model: str, more: Any = ()) -> dict[str, Any]:
    """One answer (``c``), or several (``n > 1``: ``more`` after it): a choice each, one usage total."""
    cs = (c, *more)
    usage = cs[0].usage if not more else type(c.usage)(sum(x.usage.input_tokens for x in cs), sum(x.usage.output_tokens for x in cs))
    return {
        "id": f"chatcmpl-{run_id}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": message_body(x), "finish_reason": finish_reason(x.finish_reason),
                     "logprobs": logprobs_body(x.logprobs)} for i, x in enumerate(cs)],
        "usage": usage_body(usage),
    }


class ChunkEncoder:
    """The ``chat.completion.chunk`` events of one streamed answer."""

    def __init__(self, run_id: str, model: str) -> None:
        self.id, self.created, self.model = f"chatcmpl-{run_id}", int(time.time()), model
        # a content delta is most of a stream's events: its frame around the text, encoded once
        head, tail = self.delta({"content": ""}).split(b'"content":""', 1)
        self._head, self._tail = head + b'"content":', tail

    def content(self, text: str) -> bytes:
        """``delta({"content": text})``, byte for byte, with only the text encoded."""
        return self._head + dumps(text) + self._tail

    def delta(self, delta: dict[str, Any], fin: str | None = None) -> bytes:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": fin, "logprobs": None}]})

    def usage(self, u: Any) -> bytes:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": usage_body(u)})

    def tool_calls(self, deltas: Any) -> bytes:
        """Streamed tool-call pieces: the first of each call with its id, type and name."""
        out = []
        for d in deltas:
            fn: dict[str, Any] = {"arguments": d.arguments}
            item: dict[str, Any] = {"index": d.index, "function": fn}
            if d.id is not None or d.name is not None:
                item.update({"id": d.id, "type": "function"})
                fn["name"] = d.name
            out.append(item)
        return self.delta({"tool_calls": out})

    def whole(self, text: str, fin: str = "stop") -> list[bytes]:
        """A finished answer replayed as a stream (a workflow's output)."""
        return [self.delta({"role": "assistant", "content": ""}), self.content(text), self.delta({}, fin), SSE_DONE]
