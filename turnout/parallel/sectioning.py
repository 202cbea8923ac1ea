"""Sectioning: split a task into independent parts, run them concurrently, aggregate the results.

Splitters are pure functions returning :class:`Section` objects (list items, paragraphs, markdown
headings, token windows with overlap, or your own). The map step renders a prompt per section and
runs it through the fan-out engine. Aggregators: ``concatenate`` (with section headers),
``merge_json`` (lists concatenated, objects merged, conflicting values reported) and
:class:`Synthesize` (an LLM combines the outputs; when they would overflow the model's context it
reduces hierarchically — groups that fit are synthesised first, then their syntheses).

Token counts use the model's own tokenizer: ``count_tokens=`` when given, else the model's
``count_tokens`` (the embedded LocalLLM has an exact one, see :func:`token_counter`), else the
documented estimate of 4 characters a token. Failed sections stay visible in the result, never dropped.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _telemetry
from .._errors import ConfigError
from .._scope import active_run
from .._types import Completion, Request
from ..models.base import ChatModel
from .engine import Envelope, Policy, fan_out

__all__ = [
    "Section",
    "SectionedResult",
    "Synthesize",
    "concatenate",
    "json_outputs",
    "merge_json",
    "run_sections",
    "split_headings",
    "split_items",
    "split_paragraphs",
    "split_tokens",
    "token_counter",
]

CountTokens = Callable[[str], int]


def estimate(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def token_counter(model: Any) -> CountTokens:
    """The model's own token counter when it has one (``LocalLLM.count_tokens``, looked up through
    policy wrappers such as ``Traced(Retrying(...))``), else the 4-characters-a-token estimate."""
    from ..models.base import own_token_counter

    return own_token_counter(model) or estimate


@dataclass(frozen=True, slots=True)
class Section:
    index: int
    text: str
    title: str = ""
    start: int = 0  # character offsets in the source, where there is one
    end: int = 0


# -- splitters ----------------------------------------------------------------------------------
def split_items(items: Sequence[Any]) -> list[Section]:
    """One section per list item (strings, or anything with a useful ``str``)."""
    return [Section(i, x if isinstance(x, str) else json.dumps(x) if isinstance(x, (dict, list)) else str(x), f"Item {i + 1}")
            for i, x in enumerate(items)]


def split_paragraphs(text: str, *, max_chars: int | None = None) -> list[Section]:
    """Paragraphs (blank-line separated); with ``max_chars``, neighbours are merged up to that size."""
    parts = [(m.start(), m.end()) for m in re.finditer(r"\S(?:.*?\S)?(?=\n\s*\n|\s*\Z)", text, re.S)]
    out: list[tuple[int, int]] = []
    for a, b in parts:
        if out and max_chars and (b - out[-1][0]) <= max_chars:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return [Section(i, text[a:b], f"Part {i + 1}", a, b) for i, (a, b) in enumerate(out)]


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def split_headings(text: str, *, max_level: int = 6) -> list[Section]:
    """Markdown sections: each heading (up to ``max_level``) starts one; text before the first is a preamble."""
    heads = [m for m in _HEADING.finditer(text) if len(m.group(1)) <= max_level]
    out: list[Section] = []
    if not heads:
        return [Section(0, text.strip(), "Document", 0, len(text))] if text.strip() else []
    if text[: heads[0].start()].strip():
        out.append(Section(0, text[: heads[0].start()].strip(), "Preamble", 0, heads[0].start()))
    for j, m in enumerate(heads):
        end = heads[j + 1].start() if j + 1 < len(heads) else len(text)
        out.append(Section(len(out), text[m.start() : end].strip(), m.group(2).strip(), m.start(), end))
    return out


def split_tokens(text: str, size: int, *, overlap: int = 0, count_tokens: CountTokens | None = None) -> list[Section]:
    """Windows of about ``size`` tokens, each starting ``overlap`` tokens before the previous end.

    Cut at word boundaries. Tokens are counted with ``count_tokens`` when given, else estimated.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ConfigError(f"split_tokens needs size >= 1 and 0 <= overlap < size (got size={size}, overlap={overlap})")
    count = count_tokens or estimate
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    out: list[Section] = []
    i = 0
    while i < len(words):
        # the most words from i that fit in ``size`` tokens: a galloping then binary search, so a real
        # tokenizer is called O(log w) times per window of w words, never on more than 2 windows of text
        def fits(end: int, start: int = words[i][0]) -> bool:
            return count(text[start : words[end - 1][1]]) <= size

        lo, step = i + 1, 1  # words[i:lo] is known to fit (or is the single-word minimum)
        while lo + step <= len(words) and fits(lo + step):
            lo, step = lo + step, step * 2
        hi = min(lo + step - 1, len(words))  # words[i:hi + 1] is known not to fit (or the end)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        j = lo  # a single word longer than a window still makes progress
        a, b = words[i][0], words[j - 1][1]
        out.append(Section(len(out), text[a:b], f"Window {len(out) + 1}", a, b))
        if j >= len(words):
            break
        if not overlap:
            i = j
            continue
        # the next window starts ``overlap`` tokens' worth of words before this one's end
        lo, hi = i + 1, j  # the earliest k with words[k:j] within ``overlap`` tokens
        while lo < hi:
            mid = (lo + hi) // 2
            if count(text[words[mid][0] : words[j - 1][1]]) <= overlap:
                hi = mid
            else:
                lo = mid + 1
        i = lo
    return out


# -- aggregators ----------------------------------------------------------------------------------
def concatenate(sections: Sequence[Section], envelopes: Sequence[Envelope[Completion]]) -> str:
    """Each output under its section's header; failed sections are marked, not dropped."""
    parts = []
    for s, e in zip(sections, envelopes, strict=True):
        body = e.value.text if e.ok and e.value is not None else f"[section failed: {e.status}{': ' + str(e.error)[:200] if e.error else ''}]"
        parts.append(f"## {s.title or f'Section {s.index + 1}'}\n\n{body.strip()}")
    return "\n\n".join(parts)


def merge_json(outputs: Sequence[Any]) -> tuple[Any, list[str]]:
    """Merge JSON values: objects key by key, lists concatenated, equal scalars kept; a differing
    scalar is a conflict (the first value is kept and the conflict reported by path)."""
    conflicts: list[str] = []

    def merge(a: Any, b: Any, path: str) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(out[k], v, f"{path}.{k}" if path else k) if k in out else v
            return out
        if isinstance(a, list) and isinstance(b, list):
            return a + b
        if a != b:
            conflicts.append(f"{path or '(root)'}: {json.dumps(a)[:60]} vs {json.dumps(b)[:60]}")
        return a

    result: Any = None
    for o in outputs:
        result = o if result is None else merge(result, o, "")
    return result, conflicts


@dataclass
class Synthesize:
    """Combine section outputs with a model. ``prompt`` gets ``{outputs}`` (and ``{task}``).

    ``context_tokens`` is the model's window; outputs that would not fit (with ``reserve_tokens``
    for the answer) are reduced in groups first, level by level.
    """

    model: ChatModel
    prompt: str = "Combine these partial results into one coherent answer.\n\n{outputs}"
    context_tokens: int = 4096
    reserve_tokens: int = 512
    max_tokens: int | None = 512
    count_tokens: CountTokens | None = None
    levels: int = field(default=0, init=False)

    def _req(self, outputs: Sequence[str], task: str) -> Request:
        joined = "\n\n---\n\n".join(outputs)
        return Request.of(self.prompt.format(outputs=joined, task=task), max_tokens=self.max_tokens, temperature=0.0)

    async def __call__(self, outputs: Sequence[str], task: str = "", concurrency: int = 4) -> Completion:
        count = self.count_tokens or token_counter(self.model)
        budget = self.context_tokens - self.reserve_tokens - count(self.prompt)
        if budget <= 0:
            raise ConfigError("Synthesize: the prompt and reserve leave no room in the context window")
        items = [o for o in outputs]
        self.levels = 0
        while sum(count(o) for o in items) > budget and len(items) > 1:
            groups: list[list[str]] = [[]]
            for o in items:
                if groups[-1] and sum(count(x) for x in groups[-1]) + count(o) > budget:
                    groups.append([])
                groups[-1].append(o)
            if len(groups) == len(items):  # nothing pairs up: each output alone is near the budget
                raise ConfigError(f"Synthesize: section outputs are too large to combine within {self.context_tokens} tokens")
            res = await fan_out([lambda g=g: self.model.complete(self._req(g, task)) for g in groups], concurrency=concurrency,
                                policy="fail_fast")
            res.raise_for_errors()
            items = [c.text for c in res.values]
            self.levels += 1
        return await self.model.complete(self._req(items, task))


# -- the map step ----------------------------------------------------------------------------------
@dataclass
class SectionedResult:
    sections: list[Section]
    envelopes: list[Envelope[Completion]]
    aggregate: Any = None
    conflicts: list[str] = field(default_factory=list)
    synthesis_levels: int = 0
    cost_usd: float = 0.0

    @property
    def outputs(self) -> list[str | None]:
        return [e.value.text if e.ok and e.value is not None else None for e in self.envelopes]

    @property
    def failed(self) -> list[tuple[int, str]]:
        """(section index, why) for every section that did not produce an output."""
        return [(e.index, f"{e.status}: {e.error}" if e.error else e.status) for e in self.envelopes if not e.ok]


async def run_sections(
    sections: Sequence[Section],
    model: ChatModel,
    prompt: str,
    *,
    system: str | None = None,
    aggregate: str | Synthesize | Callable[[Sequence[Section], Sequence[Envelope[Completion]]], Any] = "concatenate",
    task: str = "",
    concurrency: int = 8,
    timeout: float | None = None,
    policy: Policy = "best_effort",
    context_tokens: int | None = None,
    max_tokens: int | None = None,
    count_tokens: CountTokens | None = None,
    extra: dict[str, Any] | None = None,
    name: str = "sections",
) -> SectionedResult:
    """Map ``prompt`` over the sections concurrently, then aggregate.

    ``prompt`` is a ``str.format`` template with ``{section}``, ``{title}``, ``{index}``, ``{task}``
    and any ``extra`` fields. With ``context_tokens``, a section that cannot fit is an error naming
    it, raised before any call is made.
    """
    if not sections:
        raise ConfigError("nothing to do: the splitter produced no sections")
    fields = {f for _, f, _, _ in string.Formatter().parse(prompt) if f}
    unknown = fields - {"section", "title", "index", "task", *(extra or {})}
    if unknown:
        raise ConfigError(f"the section prompt uses unknown fields: {', '.join(sorted(unknown))}")
    if context_tokens:
        _check_fit(sections, count_tokens or token_counter(model), context_tokens, max_tokens, prompt, system)
    reqs = [Request.of(prompt.format(section=s.text, title=s.title, index=s.index, task=task, **(extra or {})), system=system,
                       max_tokens=max_tokens, metadata={"section": str(s.index)}) for s in sections]
    with _telemetry.span(f"sections {name}", {"turnout.sections": len(sections)}) as s:
        res = await fan_out([lambda r=r: model.complete(r) for r in reqs], concurrency=concurrency, timeout=timeout, policy=policy)
        if s is not None:
            _telemetry.set_attributes(s, {"turnout.sections.failed": sum(1 for e in res.envelopes if e.status != "ok")})
    a = active_run()
    if a is not None:  # inside ``with store.run(...)``: one row per section envelope
        a[0].record_sections(name, res.envelopes, [s.title for s in sections], run_id=a[1])
    out = SectionedResult(list(sections), res.envelopes, cost_usd=res.cost_usd)
    await _aggregate(out, aggregate, task, concurrency)
    return out


def _check_fit(sections: Sequence[Section], count: CountTokens, context_tokens: int, max_tokens: int | None, prompt: str,
               system: str | None) -> None:
    """Refuse, before any call, a section that cannot fit the context with the prompt and the answer."""
    room = context_tokens - (max_tokens or 512) - count(prompt) - (count(system) if system else 0)
    for s in sections:
        if count(s.text) > room:
            raise ConfigError(f"section {s.index} ({s.title!r}) is ~{count(s.text)} tokens; only {room} fit in the "
                              f"{context_tokens}-token context with the prompt and answer: split it smaller")


def json_outputs(outputs: Sequence[tuple[int, Any]]) -> tuple[list[Any], list[str]]:
    """The sections' outputs as JSON values — a value already parsed as is, a text by its first
    ``{...}`` or ``[...]`` — and a conflict line for each that is not JSON (``merge_json``'s input)."""
    parsed, conflicts = [], []
    for i, v in outputs:
        if not isinstance(v, str):
            parsed.append(v)
            continue
        m = re.search(r"\{.*\}|\[.*\]", v, re.S)
        try:
            parsed.append(json.loads(m.group(0) if m else v))
        except ValueError:
            conflicts.append(f"section {i}: output is not JSON: {v[:60]!r}")
    return parsed, conflicts


async def _aggregate(out: SectionedResult, aggregate: Any, task: str, concurrency: int) -> None:
    sections, envs = out.sections, out.envelopes
    if aggregate == "concatenate":
        out.aggregate = concatenate(sections, envs)
    elif aggregate == "merge_json":
        parsed, out.conflicts = json_outputs([(e.index, e.value.text) for e in envs if e.ok and e.value is not None])
        out.aggregate, conflicts = merge_json(parsed)
        out.conflicts += conflicts
    elif isinstance(aggregate, Synthesize):
        ok = [f"[{s.title}]\n{e.value.text}" for s, e in zip(sections, envs, strict=True) if e.ok and e.value is not None]
        if ok:
            c = await aggregate(ok, task, concurrency)
            out.aggregate = c.text
            out.cost_usd += c.cost_usd
            out.synthesis_levels = aggregate.levels
    elif callable(aggregate):
        out.aggregate = aggregate(sections, envs)
    else:
        raise ConfigError(f"unknown aggregator {aggregate!r}: use 'concatenate', 'merge_json', Synthesize(...) or a function")
