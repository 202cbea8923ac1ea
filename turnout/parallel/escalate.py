"""The steps after a vote's tally, shared by ``vote``, the workflow ``VoteStep`` and the escalation
cascade: a judge model settles a tie (``judge_tie``), and a verdict whose agreement is too low
(``low_agreement`` — the one rule) is handed on (``escalate``). Each returns a new ``Verdict``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from .._errors import TurnoutError
from .._types import Request, ResponseFormat
from ..models.base import ChatModel

if TYPE_CHECKING:
    from .voting import Verdict

__all__ = ["escalate", "judge_tie", "low_agreement"]


def low_agreement(verdict: Verdict, threshold: float) -> bool:
    """No answer, or the winner's share of the votes below ``threshold``: not good enough to stop."""
    return verdict.answer is None or verdict.agreement < threshold - 1e-9


async def judge_tie(verdict: Verdict, judge: ChatModel, question: str) -> Verdict:
    """Ask ``judge`` which tied candidate is right; a failed or invalid judgement is ``escalated``."""
    cands = verdict.tied or list(verdict.counts)
    examples: dict[str, str] = {}
    for v in verdict.votes:
        if v.key in cands and v.key not in examples:
            examples[v.key] = v.raw  # type: ignore[index]
    listing = "\n".join(f"{i}: {examples[k][:800]}" for i, k in enumerate(cands))
    req = Request.of(
        f"Question:\n{question}\n\nCandidate answers:\n{listing}\n\nWhich candidate answer is correct? "
        'Reply with JSON {"choice": <number>}.',
        system="You are a careful judge.", temperature=0.0, max_tokens=16,
        response_format=ResponseFormat.json_schema(
            {"type": "object", "properties": {"choice": {"type": "integer", "enum": list(range(len(cands)))}}, "required": ["choice"]}),
    )
    try:
        c = await judge.complete(req)
        choice = json.loads(c.text).get("choice")
    except (TurnoutError, ValueError, AttributeError) as e:
        return replace(verdict, outcome="escalated", reason=verdict.reason + f"; judge failed ({type(e).__name__}): escalated")
    if not isinstance(choice, int) or not 0 <= choice < len(cands):
        return replace(verdict, outcome="escalated", reason=verdict.reason + f"; judge returned an invalid choice {choice!r}: escalated")
    return replace(verdict, answer=cands[choice], outcome="judged", cost_usd=verdict.cost_usd + c.cost_usd,
                   reason=verdict.reason + f"; judge chose {cands[choice]}")


async def escalate(verdict: Verdict, threshold: float, handler: Callable[[Verdict], Awaitable[Verdict | None]]) -> Verdict:
    """Below ``threshold`` (``low_agreement``): ``handler(verdict)`` — a stronger model, a person — and
    what it returns replaces the verdict (None keeps it), marked ``escalated`` unless it was judged."""
    if not low_agreement(verdict, threshold):
        return verdict
    v = replace(verdict, reason=verdict.reason + f"; agreement {verdict.agreement:.0%} below {threshold:.0%}: escalated")
    replaced = await handler(v)
    if replaced is not None:
        v = replaced
    return v if v.outcome == "judged" else replace(v, outcome="escalated")
