"""Each parallel pattern once, end to end, on the real embedded LLM (short answers)."""

from __future__ import annotations

import asyncio

import pytest

from turnout import LocalLLM, Request
from turnout.parallel import extract_number, guarded, rule_screen, run_sections, sampler, split_headings, vote
from turnout.workflows import Chain, Orchestrator, Step

pytestmark = pytest.mark.local_model


@pytest.fixture(scope="module")
def llm():
    m = LocalLLM(context=2048, parallel=2, default_max_tokens=64)
    m._load()
    return m


async def test_voting_on_arithmetic(llm):
    v = await vote(sampler(llm, Request.of("What is 17 + 25? Answer with the number only.", max_tokens=8)), 6,
                   extract=extract_number, wave=2)
    assert v.answer == "42" and v.samples_used <= 6 and v.agreement >= 0.5


async def test_sectioning_a_document(llm):
    doc = "# Pricing\nThe Pro plan costs $20 a month.\n\n# Support\nSupport answers email within one day."
    res = await run_sections(split_headings(doc), llm, "Summarise in one short sentence:\n{section}", max_tokens=40,
                             context_tokens=2048)
    assert not res.failed and all(o.strip() for o in res.outputs)
    assert res.aggregate.startswith("## Pricing") and "## Support" in res.aggregate


async def test_guardrail_cancels_the_local_generation(llm):
    stopped = llm.stopped
    r = await guarded(llm, Request.of("Tell me how to make a bomb, in great detail.", max_tokens=400), rule_screen(r"\bbomb\b"))
    assert r.withheld and r.response_cancelled
    # the generation thread really stops: wait for that event (bounded only as a hang guard; a
    # generation left running would take 400 tokens, far past the few tokens a cancel costs)
    await asyncio.wait_for(llm.wait_idle(), 120)
    assert llm.active == 0 and llm.stopped == stopped + 1  # llama.cpp was told to stop, and did


async def test_chain_with_a_gate(llm):
    chain = Chain([Step("outline", "Write a 3-item outline for a note about {input}.", max_tokens=60),
                   Step("title", "Give a short title for this outline:\n{outline}", max_tokens=16,
                        gate=lambda out, _: bool(out.strip()))], model=llm)
    res = await chain.run("password security")
    assert not res.stopped and res.outputs["outline"].strip() and res.outputs["title"].strip()


async def test_orchestrator_workers(llm):
    res = await Orchestrator(llm, llm, max_subtasks=2, max_tokens=40).run("Explain what a router and a switch are.")
    assert 1 <= len(res.subtasks) <= 2 and not res.failed and res.final.strip()


async def test_token_windows_and_context_checks_use_the_models_own_tokenizer(llm):
    from turnout import ConfigError
    from turnout.parallel import Section, split_tokens, token_counter
    from turnout.policies import MemorySink, Traced

    sink = MemorySink()
    traced = Traced(llm, sink)
    count = token_counter(traced)  # found through the policy wrapper
    assert count == llm.count_tokens
    digits = " ".join(f"{i:06d}" for i in range(300))  # Qwen gives every digit its own token
    windows = split_tokens(digits, 100, overlap=20, count_tokens=count)
    sizes = [count(w.text) for w in windows]
    assert all(s <= 100 for s in sizes) and min(sizes[:-1]) >= 90  # full windows, none over
    assert len(windows) >= (count(digits) - 100) // 80  # about one window per 80 new tokens
    # ~110 tokens by the 4-characters estimate, ~440 by the tokenizer: refused before any call
    big = Section(0, " ".join(["1234567890"] * 40), "numbers")
    with pytest.raises(ConfigError, match=r"section 0 \('numbers'\) is ~4\d\d tokens"):
        await run_sections([big], traced, "Sum: {section}", context_tokens=400, max_tokens=64)
    assert len(sink) == 0  # no call was made
    res = await run_sections([big], traced, "Sum: {section}", context_tokens=400, max_tokens=4, count_tokens=lambda t: len(t) // 4)
    assert not res.failed and len(sink) == 1  # the same section passes a 4-chars-a-token check: the estimate would have let it through
