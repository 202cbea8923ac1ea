"""Value types shared by every layer: frozen, slotted dataclasses (pydantic stays at the edges)."""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    "Usage",
    "estimate_tokens",
]

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "cancelled", "error", "unknown"]


class Message(NamedTuple):
    role: Role
    content: str

    @staticmethod
    def system(text: str) -> Message:
        return Message("system", text)

    @staticmethod
    def user(text: str) -> Message:
        return Message("user", text)

    @staticmethod
    def assistant(text: str) -> Message:
        return Message("assistant", text)


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


class Request(_RequestFields):
    """One chat request, immutable. Build it with :meth:`Request.of` for the common single-prompt case.

    Fields: ``messages, temperature, max_tokens, stop, response_format, seed, top_p, logprobs,
    timeout, metadata``. (A validated NamedTuple rather than a frozen dataclass: a request is built
    for every call, and a frozen dataclass costs ~4 µs more to build — see docs/benchmarks.md.)
    """

    __slots__ = ()

    def __new__(cls, messages: Iterable[Message], *args: Any, **kw: Any) -> Request:
        self = super().__new__(cls, messages, *args, **kw)
        if type(self.messages) is not tuple or (self.stop and type(self.stop) is not tuple):
            stop = self.stop
            stop = (stop,) if isinstance(stop, str) else tuple(stop)
            self = super().__new__(cls, *self._replace(messages=tuple(self.messages), stop=stop))
        if not self.messages:
            from ._errors import ConfigError

            raise ConfigError("a Request needs at least one message")
        return self

    @staticmethod
    def of(prompt: str, *, system: str | None = None, **kw: Any) -> Request:
        if system:
            return Request((Message("system", system), Message("user", prompt)), **kw)
        return Request((Message("user", prompt),), **kw)

    def with_(self, **changes: Any) -> Request:
        return Request(*self._replace(**changes))

    @property
    def prompt_chars(self) -> int:
        n = 0
        for m in self.messages:
            n += len(m.content)
        return n


def prompt_token_bound(request: Request, count: Any = None) -> int:
    """The prompt's tokens for a budget: ``count(text)`` (the model's own tokenizer) when given, else
    a bound no byte-level BPE tokenizer (GPT, Qwen, Llama 3, ...) exceeds — a token covers at least one
    UTF-8 byte — plus a chat template's few tokens per message. chars/4 would undercount short words,
    digits, CJK and code (up to 4x: budgets overspent under concurrency)."""
    if count is not None:
        return sum(int(count(m.content)) + 4 for m in request.messages)
    return sum(len(m.content.encode("utf-8", "surrogatepass")) + 4 for m in request.messages)


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
