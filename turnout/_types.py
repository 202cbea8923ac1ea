"""Value types shared by every layer: frozen, slotted dataclasses (pydantic stays at the edges)."""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from ._constants import CHARS_PER_TOKEN
from ._errors import ConfigError

__all__ = [
    "Completion",
    "Message",
    "Price",
    "Request",
    "ResponseFormat",
    "StreamChunk",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCalls",
    "Usage",
    "estimate_tokens",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "cancelled", "error", "unknown"]
TOOL_CHOICES = ("auto", "none", "required")  # or the name of one of the request's tools


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: ``parameters`` is the JSON schema of its arguments (an object);
    ``strict`` asks the provider to keep the arguments to that schema exactly, where it can."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False
    # computed once (a tool is sent with every call of a loop): the JSON-schema function object, and
    # it as JSON text (what budgets and rate limits count)
    function: dict[str, Any] = field(init=False, repr=False, compare=False)
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        import json as _json
        import re

        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name or ""):
            raise ConfigError(f"tool name {self.name!r}: use 1-64 letters, digits, '_' or '-' (what every provider accepts)")
        if self.name in TOOL_CHOICES:
            raise ConfigError(f"tool name {self.name!r} is a tool_choice keyword; name the tool otherwise")
        if not isinstance(self.parameters, Mapping) or self.parameters.get("type", "object") != "object":
            raise ConfigError(f"tool {self.name}: parameters must be a JSON schema of type object")
        fn = {"name": self.name, "description": self.description, "parameters": dict(self.parameters), **({"strict": True} if self.strict else {})}
        object.__setattr__(self, "function", fn)
        object.__setattr__(self, "text", _json.dumps(fn, default=str))


class ToolCall(NamedTuple):
    """A call the model asked for: ``arguments`` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str = "{}"

    def args(self) -> dict[str, Any]:
        """The arguments parsed; ``BadResponse`` naming the tool when they are not a JSON object."""
        import json as _json

        from ._errors import BadResponse

        try:
            v = _json.loads(self.arguments or "{}")
        except ValueError:
            raise BadResponse(f"tool call {self.name} ({self.id}): arguments are not JSON: {self.arguments[:120]!r}") from None
        if not isinstance(v, dict):
            raise BadResponse(f"tool call {self.name} ({self.id}): arguments must be a JSON object, not {type(v).__name__}")
        return v


class ToolCallDelta(NamedTuple):
    """A piece of a streamed tool call: the first piece of call ``index`` has its id and name, later
    ones add fragments of the arguments' JSON text (``ToolCalls`` puts them together)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class ToolCalls:
    """Assembles the tool calls of a stream from its ``ToolCallDelta`` pieces (several calls may be
    interleaved, by index). ``done()`` gives the calls in index order, each checked to be JSON."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[int, list[Any]] = {}

    def add(self, deltas: Iterable[ToolCallDelta]) -> None:
        for d in deltas:
            p = self._parts.get(d.index)
            if p is None:
                p = self._parts[d.index] = [d.id or "", d.name or "", []]
            else:
                p[0] = p[0] or d.id or ""
                p[1] = p[1] or d.name or ""
            if d.arguments:
                p[2].append(d.arguments)

    def __bool__(self) -> bool:
        return bool(self._parts)

    def done(self, model: str = "") -> tuple[ToolCall, ...]:
        calls = tuple(ToolCall(i or f"call_{k}", n, "".join(a) or "{}") for k, (i, n, a) in sorted(self._parts.items()))
        for c in calls:
            if not c.name:
                from ._errors import BadResponse

                raise BadResponse(f"streamed tool call {c.id} has no name", model=model)
        return checked_calls(calls, model)


def checked_calls(calls: tuple[ToolCall, ...], model: str = "") -> tuple[ToolCall, ...]:
    """The calls, each one's arguments checked to be a JSON object: else a ``BadResponse`` naming the
    tool and the model (a broken call is reported, never passed on or dropped)."""
    from ._errors import BadResponse

    for c in calls:
        try:
            c.args()
        except BadResponse as e:
            raise BadResponse(str(e), model=model) from None
    return calls


class Message(NamedTuple):
    """One turn. An assistant turn may carry ``tool_calls`` (its ``content`` may then be empty); a
    ``tool`` turn is a tool's result for the call ``tool_call_id`` (``name``: the tool's)."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @staticmethod
    def system(text: str) -> Message:
        return Message("system", text)

    @staticmethod
    def user(text: str) -> Message:
        return Message("user", text)

    @staticmethod
    def assistant(text: str, tool_calls: Iterable[ToolCall] = ()) -> Message:
        return Message("assistant", text, tuple(tool_calls))

    @staticmethod
    def tool(call_id: str, content: str, name: str | None = None) -> Message:
        return Message("tool", content, (), call_id, name)

    @property
    def chars(self) -> int:
        """What the turn sends: its text and, for an assistant turn, its calls' names and arguments."""
        n = len(self.content)
        for c in self.tool_calls:
            n += len(c.name) + len(c.arguments)
        return n


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """Structured output: ``json_schema`` constrains the answer to a schema, ``json_object`` to any JSON."""

    type: Literal["text", "json_object", "json_schema"] = "json_schema"
    schema: Mapping[str, Any] | None = None
    name: str = "answer"
    strict: bool = True

    @staticmethod
    def json_schema(schema: Mapping[str, Any], name: str = "answer") -> ResponseFormat:
        return ResponseFormat("json_schema", schema, name)


_NO_TAGS: Mapping[str, str] = MappingProxyType({})


class _RequestFields(NamedTuple):
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    response_format: ResponseFormat | None = None
    seed: int | None = None
    top_p: float | None = None
    logprobs: int | None = None  # ask for top-k token log-probabilities where the backend has them
    timeout: float | None = None  # seconds for this call; None = the adapter's default
    metadata: Mapping[str, str] = _NO_TAGS  # tags for traces; never sent upstream
    tools: tuple[Tool, ...] = ()  # functions the model may call
    tool_choice: str | None = None  # auto | none | required | a tool's name; None = the provider's default (auto)
    parallel_tool_calls: bool | None = None  # False: at most one call per turn


_CHECKED = frozenset({"messages", "stop", "tools", "tool_choice"})  # the fields Request.__new__ normalises and checks


class Request(_RequestFields):
    """One chat request, immutable. Build it with :meth:`Request.of` for the common single-prompt case.

    Fields: ``messages, temperature, max_tokens, stop, response_format, seed, top_p, logprobs,
    timeout, metadata, tools, tool_choice, parallel_tool_calls``. (A validated NamedTuple rather
    than a frozen dataclass: a request is built for every call, and a frozen dataclass costs ~4 µs
    more to build — see docs/benchmarks.md.)
    """

    __slots__ = ()

    def __new__(cls, messages: Iterable[Message], *args: Any, **kw: Any) -> Request:
        self = super().__new__(cls, messages, *args, **kw)
        if type(self.messages) is not tuple or (self.stop and type(self.stop) is not tuple) or type(self.tools) is not tuple:
            stop = self.stop
            stop = (stop,) if isinstance(stop, str) else tuple(stop)
            self = super().__new__(cls, *self._replace(messages=tuple(self.messages), stop=stop, tools=tuple(self.tools)))
        if not self.messages:
            raise ConfigError("a Request needs at least one message")
        if self.tool_choice is not None or self.tools:
            _check_tools(self)
        return self

    @staticmethod
    def of(prompt: str, *, system: str | None = None, **kw: Any) -> Request:
        if system:
            return Request((Message("system", system), Message("user", prompt)), **kw)
        return Request((Message("user", prompt),), **kw)

    def with_(self, **changes: Any) -> Request:
        if _CHECKED.isdisjoint(changes):  # sampling settings, timeout, metadata: nothing __new__ checks changed
            return self._replace(**changes)
        return Request(*self._replace(**changes))

    @property
    def prompt_chars(self) -> int:
        """What the prompt sends: every turn (tool calls and results included) and the tool definitions."""
        n = 0
        for m in self.messages:
            n += len(m.content) if not m.tool_calls else m.chars
        return n + (tools_chars(self.tools) if self.tools else 0)


def tools_chars(tools: Sequence[Tool]) -> int:
    """The characters tool definitions add to a prompt (name, description, the schema as JSON)."""
    return sum(len(t.text) for t in tools)


def _check_tools(req: Request) -> None:
    names = [t.name for t in req.tools]
    if len(set(names)) != len(names):
        raise ConfigError(f"tools: each tool needs its own name ({', '.join(sorted({n for n in names if names.count(n) > 1}))} repeated)")
    tc = req.tool_choice
    if tc is not None and tc not in TOOL_CHOICES and tc not in names:
        known = ", ".join([*TOOL_CHOICES, *names])
        raise ConfigError(f"tool_choice {tc!r} is neither a keyword nor one of the request's tools (known: {known})")
    if tc not in (None, "auto", "none") and not req.tools:
        raise ConfigError(f"tool_choice {tc!r} needs tools in the request")


def prompt_token_bound(request: Request, count: Any = None) -> int:
    """The prompt's tokens for a budget: ``count(text)`` (the model's own tokenizer) when given, else
    a bound no byte-level BPE tokenizer (GPT, Qwen, Llama 3, ...) exceeds — a token covers at least one
    UTF-8 byte — plus a chat template's few tokens per message. chars/4 would undercount short words,
    digits, CJK and code (up to 4x: budgets overspent under concurrency)."""
    extra = tools_text(request) if request.tools or any(m.tool_calls for m in request.messages) else ""
    if count is not None:
        return sum(int(count(m.content)) + 4 for m in request.messages) + (int(count(extra)) if extra else 0)
    return sum(len(m.content.encode("utf-8", "surrogatepass")) + 4 for m in request.messages) + len(extra.encode("utf-8", "surrogatepass"))


def tools_text(request: Request) -> str:
    """The tool definitions and the tool calls of a request as text, for counting their tokens."""
    parts = [t.text for t in request.tools]
    parts += [c.name + c.arguments for m in request.messages for c in m.tool_calls]
    return "\n".join(parts)


def estimate_tokens(text_or_chars: str | int) -> int:
    """A documented estimate (4 characters a token) used only for budgets and rate limits."""
    n = text_or_chars if isinstance(text_or_chars, int) else len(text_or_chars)
    return max(1, math.ceil(n / CHARS_PER_TOKEN))


class Usage(NamedTuple):
    """Token counts of one call. (A NamedTuple, like Completion: immutable and ~6× cheaper to build
    than a frozen dataclass, which matters on the per-call hot path — see docs/benchmarks.md.)"""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: object) -> Usage:  # type: ignore[override]
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per one million tokens."""

    input_per_m: float = 0.0
    output_per_m: float = 0.0

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input_per_m + usage.output_tokens * self.output_per_m) / 1e6

    def estimate(self, request: Request, default_max_tokens: int = 512, count: Any = None) -> float:
        """An upper bound of a call's cost before it is made: ``prompt_token_bound`` input tokens (with
        the model's own ``count`` when it has one) and ``max_tokens`` (else ``default_max_tokens``,
        which ``Budgeted`` then sends as the cap) output."""
        out = request.max_tokens if request.max_tokens is not None else default_max_tokens
        return self.cost(Usage(prompt_token_bound(request, count), out))

    @property
    def free(self) -> bool:
        return self.input_per_m == 0 and self.output_per_m == 0


FREE = Price()


class Completion(NamedTuple):
    """One whole answer. Immutable (a NamedTuple for speed on the hot path)."""

    text: str
    model: str
    finish_reason: FinishReason = "stop"
    usage: Usage = Usage()
    cost_usd: float = 0.0
    latency_s: float = 0.0
    # per generated token: (token, logprob, ((alt, logprob), ...)) where the backend gives them
    logprobs: Sequence[tuple[str, float, tuple[tuple[str, float], ...]]] | None = None
    raw_id: str | None = None
    # the routing Decision that chose the model, when a model router served the call (per call, so
    # concurrent callers of one routed model never read each other's route)
    decision: Any = None
    tool_calls: tuple[ToolCall, ...] = ()  # the calls the model asked for (finish_reason "tool_calls")
    cached: bool = False  # answered from the response cache (``Cached``): cost 0, nothing was sent

    def json(self) -> Any:
        """Parse the text as JSON (structured output). Raises BadResponse if it is not JSON."""
        import json as _json

        from ._errors import BadResponse

        try:
            return _json.loads(self.text)
        except ValueError as e:
            raise BadResponse(f"model output is not JSON: {self.text[:120]!r}", model=self.model) from e


class StreamChunk(NamedTuple):
    """A piece of a streamed answer. The last chunk has ``done=True`` and carries the totals."""

    delta: str = ""
    done: bool = False
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    model: str = ""
    decision: Any = None  # as on Completion: set on every chunk of a routed stream
    tool_calls: tuple[ToolCallDelta, ...] = ()  # pieces of tool calls (assemble them with ``ToolCalls``)
    cached: bool = False  # a replay of a cached answer


# -- calendar periods (UTC) of budgets and key limits ---------------------------------------------------
PERIODS: tuple[str, ...] = ("hour", "day", "week", "month")


def period_start(period: str | None, now: float) -> float:
    """Unix time the current calendar period (UTC) began; 0 for no period."""
    if period is None:
        return 0.0
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    if period == "hour":
        s = t.replace(minute=0, second=0, microsecond=0)
    elif period == "day":
        s = t.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "week":
        s = (t - dt.timedelta(days=t.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "month":
        s = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ConfigError(f"unknown budget period {period!r}; use one of {', '.join(PERIODS)}")
    return calendar.timegm(s.timetuple())
