"""Sectioning: splitters, the map step, aggregators, hierarchical reduce, partial failures."""

from __future__ import annotations

import json

import pytest

from turnout import ConfigError, Request
from turnout.errors import ProviderUnavailable
from turnout.parallel import (
    Section,
    Synthesize,
    merge_json,
    run_sections,
    split_headings,
    split_items,
    split_paragraphs,
    split_tokens,
)
from turnout.testing import FunctionModel, ScriptedModel

DOC = "Intro line.\n\n# Pricing\nPlans cost money.\n\n## Discounts\nNon-profits pay less.\n\n# Support\nWe answer in a day."


def test_split_headings_keeps_titles_offsets_and_preamble():
    s = split_headings(DOC)
    assert [x.title for x in s] == ["Preamble", "Pricing", "Discounts", "Support"]
    assert all(DOC[x.start : x.end].strip() == x.text for x in s)
    assert [x.title for x in split_headings(DOC, max_level=1)] == ["Preamble", "Pricing", "Support"]


def test_split_paragraphs_and_items():
    text = "a a a\n\nb b\n\n\nc"
    assert [s.text for s in split_paragraphs(text)] == ["a a a", "b b", "c"]
    assert [s.text for s in split_paragraphs(text, max_chars=12)] == ["a a a\n\nb b", "c"]
    assert [s.text for s in split_items(["x", {"k": 1}])] == ["x", '{"k": 1}']


def test_token_windows_overlap_and_cover_everything():
    words = [f"w{i:03d}" for i in range(100)]
    text = " ".join(words)
    tok = lambda s: len(s.split())  # a "tokenizer": one token a word  # noqa: E731
    s = split_tokens(text, 20, overlap=5, count_tokens=tok)
    assert all(tok(x.text) <= 20 for x in s)
    assert s[0].text.split()[-5:] == s[1].text.split()[:5]  # 5 tokens of overlap
    covered = {w for x in s for w in x.text.split()}
    assert covered == set(words)
    assert len(split_tokens("one two three", 1000)) == 1  # the documented estimate when no tokenizer is given
    with pytest.raises(ConfigError):
        split_tokens(text, 10, overlap=10)


def test_token_windows_are_full_and_the_tokenizer_sees_little_text_at_a_time():
    words = [f"w{i}" for i in range(5000)]
    text = " ".join(words)
    seen: list[int] = []

    def tok(s: str) -> int:
        seen.append(len(s.split()))
        return len(s.split())

    windows = split_tokens(text, 50, overlap=10, count_tokens=tok)
    sizes = [tok(w.text) for w in windows]
    assert sizes[:-1] == [50] * (len(sizes) - 1) and len(windows) == 125  # full windows, 40 new words each
    assert max(seen) <= 2 * 50 + 1  # never the whole document: at most about two windows of text
    assert len(seen) < 40 * len(windows)  # O(log w) calls a window, not one per word (50+)


async def test_map_runs_concurrently_in_order_and_concatenates_with_headers():
    m = FunctionModel(lambda r: r.messages[-1].content.upper(), latency=0.01)
    res = await run_sections(split_headings(DOC), m, "summarise: {section}", concurrency=4)
    assert m.max_active == 4 and res.outputs[1].startswith("SUMMARISE: # PRICING")
    assert res.aggregate.index("## Pricing") < res.aggregate.index("## Support") and not res.failed


async def test_partial_failures_are_visible():
    m = ScriptedModel({"Support": ProviderUnavailable("down")}, default="ok")
    res = await run_sections(split_headings(DOC), m, "{section}")
    assert res.failed == [(3, "error: down")]
    assert "[section failed: error: down]" in res.aggregate and res.aggregate.count("ok") == 3


def test_merge_json_concatenates_merges_and_reports_conflicts():
    merged, conflicts = merge_json([{"items": [1], "meta": {"lang": "en"}, "score": 3}, {"items": [2], "meta": {"pages": 2}, "score": 4}])
    assert merged == {"items": [1, 2], "meta": {"lang": "en", "pages": 2}, "score": 3}
    assert conflicts == ["score: 3 vs 4"]


async def test_merge_json_aggregator_notes_non_json_outputs():
    m = ScriptedModel(queue=['{"names": ["a"]}', "not json", '{"names": ["b"]}'])
    res = await run_sections(split_items(["x", "y", "z"]), m, "{section}", aggregate="merge_json", concurrency=1)
    assert res.aggregate == {"names": ["a", "b"]} and "section 1: output is not JSON" in res.conflicts[0]


async def test_hierarchical_reduce_when_outputs_overflow_the_context():
    synth_calls: list[int] = []

    def synth(r: Request) -> str:
        synth_calls.append(len(r.messages[-1].content))
        return "S" * 40  # a synthesis is short

    section_model = FunctionModel(lambda r: "x" * 400)  # each section output ~100 tokens
    s = Synthesize(FunctionModel(synth), prompt="{outputs}", context_tokens=400, reserve_tokens=50)
    res = await run_sections(split_items([str(i) for i in range(8)]), section_model, "{section}", aggregate=s)
    assert res.synthesis_levels >= 1 and len(synth_calls) > 1
    assert all(n / 4 <= 400 for n in synth_calls)  # no synthesis request overflowed the context
    assert res.aggregate == "S" * 40


async def test_bad_input_is_refused_before_any_call():
    m = ScriptedModel(default="ok")
    with pytest.raises(ConfigError, match="no sections"):
        await run_sections([], m, "{section}")
    with pytest.raises(ConfigError, match="section 0 .* tokens"):
        await run_sections([Section(0, "word " * 5000, "Huge")], m, "{section}", context_tokens=2048)
    with pytest.raises(ConfigError, match="unknown fields: secton"):
        await run_sections(split_items(["a"]), m, "{secton}")
    assert m.calls == 0
    _ = json
