"""``turnout demo``: the three things turnout does, on the embedded models, with no key and no network.

1. Route support messages through a cascade (rules -> embeddings -> the local LLM) and show each
   decision with its confidence and the stage that decided.
2. Section a long document into parallel one-sentence summaries.
3. Vote on word problems with early stopping, showing the samples it saved.
Then print the report of what was traced. Everything lands in the trace store (``--db``).
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._types import Request
from ..models.base import ChatModel, Embedder

if TYPE_CHECKING:
    from ..store.base import TraceStore

__all__ = ["MESSAGES", "PROBLEMS", "run_demo"]

MESSAGES = [
    "Can you send me the invoice for March?",
    "The app crashes every time I open the settings page",
    "How much would 40 seats on the team plan cost?",
    "I'm going to file a chargeback if I don't get my money back",
    "hi, thanks for the quick help yesterday!",
    "my payment went through twice and now my balance is negative",
    "nothing loads since the update and my whole team is stuck",
    "is there a discount if we pay yearly?",
]

PROBLEMS = [  # (question, answer)
    ("A shop has 45 apples and sells 17 of them. How many apples are left?", 28),
    ("There are 6 rows of chairs with 9 chairs in each row. How many chairs are there?", 54),
    ("A train travels 60 km every hour. How many km does it travel in 4 hours?", 240),
]


def _asset(name: str) -> str:
    return files(__name__).joinpath(name).read_text()


async def run_demo(console: Console, store: TraceStore, *, model: ChatModel | None = None, embedder: Embedder | None = None,
                   samples: int = 5) -> dict[str, Any]:
    """Run the three parts, printing as it goes; returns the numbers it printed (for tests)."""
    from ..policies.catalog import Catalog

    cat = Catalog()
    llm = model or cat.model("local")
    out: dict[str, Any] = {}
    try:
        await _routing(console, store, llm, embedder, out)
        await _sectioning(console, store, llm, out)
        await _voting(console, store, llm, samples, out)
    finally:
        await cat.aclose()
    return out


async def _routing(console: Console, store: TraceStore, llm: ChatModel, embedder: Embedder | None, out: dict[str, Any]) -> None:
    import yaml

    from ..routing.config import RouterSpec, build_router

    console.rule("[bold]1. Routing[/] support messages: rules -> embeddings -> local LLM")
    spec = RouterSpec.model_validate(yaml.safe_load(_asset("support-router.yaml")))
    router = build_router(spec, model=llm, embedder=embedder)
    t = Table(show_lines=False)
    for col in ("message", "route", "confidence", "decided by", "ms"):
        t.add_column(col, justify="right" if col in ("confidence", "ms") else "left")
    decisions = []
    with store.run("demo:routing"):
        for msg in MESSAGES:
            d = await router.decide(msg)
            decisions.append(d)
            t.add_row(escape(msg[:60]), d.route or "-", f"{d.confidence:.2f}", f"{d.stage or d.kind} ({d.outcome})",
                      f"{d.latency_s * 1000:.0f}")
    console.print(t)
    out["routes"] = [d.route for d in decisions]
    llm_calls = sum(1 for d in decisions if d.stage == "llm" or "llm" in d.reason)
    console.print(f"{len(MESSAGES)} messages, {llm_calls} needed the LLM stage; the rest were decided by rules or embeddings.")


async def _sectioning(console: Console, store: TraceStore, llm: ChatModel, out: dict[str, Any]) -> None:
    from ..parallel import run_sections, split_headings

    console.rule("[bold]2. Sectioning[/] a long document into parallel summaries")
    doc = _asset("document.md")
    sections = [s for s in split_headings(doc, max_level=2) if s.title != "Preamble" and len(s.text) > 80]
    t0 = time.perf_counter()
    with store.run("demo:sectioning", doc):
        res = await run_sections(sections, llm, "Summarise this section of a report in one short sentence.\n\n{section}",
                                 max_tokens=48, concurrency=2, name="summary")
    wall = time.perf_counter() - t0
    for s, e in zip(sections, res.envelopes, strict=True):
        text = e.value.text.strip() if e.ok and e.value is not None else f"[failed: {e.status}]"
        console.print(f"[bold]{escape(s.title)}[/]: {escape(text)}")
    busy = sum(e.latency_s for e in res.envelopes)
    console.print(f"{len(sections)} sections, wall {wall:.1f} s for {busy:.1f} s of model time "
                  f"({busy / max(wall, 1e-9):.1f}x from running them at once); failed: {len(res.failed)}")
    out["sections"] = len(sections)
    out["section_failures"] = len(res.failed)


async def _voting(console: Console, store: TraceStore, llm: ChatModel, samples: int, out: dict[str, Any]) -> None:
    from ..parallel import extract_number, sampler, vote

    console.rule(f"[bold]3. Voting[/] on word problems: up to {samples} samples, stop when decided")
    t = Table()
    for col in ("problem", "answer", "expected", "agreement", "samples"):
        t.add_column(col, justify="left" if col == "problem" else "right")
    used = planned = right = 0
    with store.run("demo:voting"):
        for q, want in PROBLEMS:
            req = Request.of(f"{q}\nAnswer with the number only.", max_tokens=12)
            v = await vote(sampler(llm, req, temperature=0.7), samples, extract=extract_number, early_stop="decided",
                           wave=1, name="word-problems")
            used, planned = used + v.samples_used, planned + samples
            right += v.answer == str(want)
            t.add_row(escape(q[:56] + "..."), str(v.answer), str(want), f"{v.agreement:.0%}", f"{v.samples_used}/{samples}")
    console.print(t)
    console.print(f"{right}/{len(PROBLEMS)} right; {used} samples instead of {planned} "
                  f"({planned - used} saved by stopping once the remaining votes could not change the winner).")
    out.update(samples_used=used, samples_planned=planned, correct=right)
