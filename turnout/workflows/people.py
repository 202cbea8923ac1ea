"""The steps that ask a person: ``Escalate`` (hand the input to a queue: a person picks the route,
or writes the answer) and ``Approve`` (a person checks an output before it goes on, e.g. a refund
over a limit). Inside a run recorded to a store, each puts an item on its queue and the run waits
(``Suspended``); when the item is resolved the run resumes from this very step (``resume.py``) —
the steps done before are replayed from the run's journal, never called again.

Without a store nobody could answer later: ``Escalate`` then answers with its message and marks
the run ``escalated`` (as it always did); ``Approve`` refuses to run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any

from .._errors import ConfigError
from .._scope import active_run, current_scope
from .context import Node, RunContext, Suspended, WorkflowError, as_text, current_key, render

__all__ = ["Approve", "Escalate", "condition_holds", "is_rejected"]

_COND = re.compile(r"^\s*(.*?)\s*(<=|>=|==|!=|<|>)\s*(.*?)\s*$", re.S)


def condition_holds(text: str, *, where: str = "") -> bool:
    """``"250 > 100"`` (a rendered ``when:``): numbers compare as numbers, text by ``==``/``!=``; a
    lone value holds unless it is empty, 0, false, no, none or null."""
    m = _COND.match(text)
    if m is None:
        return text.strip().lower() not in ("", "0", "false", "no", "none", "null")
    a, op, b = m.group(1), m.group(2), m.group(3)
    try:
        x, y = float(a), float(b)
    except ValueError:
        if op in ("==", "!="):
            return (a == b) == (op == "==")
        raise WorkflowError(f"{where}when: cannot compare {a!r} {op} {b!r} (not numbers)") from None
    return {"<": x < y, ">": x > y, "<=": x <= y, ">=": x >= y, "==": x == y, "!=": x != y}[op]


def _can_wait() -> bool:
    a = active_run()
    return a is not None and hasattr(a[0], "queue_suspend")


def _item(ctx: RunContext, value: Any, *, queue: str, step: str, kind: str, choices: list[str], context: dict[str, Any],
          timeout: float | None, webhook: str | None) -> dict[str, Any]:
    sc = current_scope()
    return {"queue": queue, "step": step, "kind": kind, "input": as_text(value), "choices": choices, "context": context,
            "team": sc.team, "workflow": sc.workflow, "expires_at": time.time() + timeout if timeout else None, "_webhook": webhook}


def _resolved(detail: dict[str, Any], res: Mapping[str, Any]) -> None:
    detail.update(item=res.get("item_id"), resolved_by=res.get("by"), waited_s=res.get("waited_s"),
                  resolution={k: v for k, v in res.items() if k in ("route", "answer", "approved", "note")})


@dataclass
class Escalate(Node):
    """Hand the input to people on ``queue``. Under a route, the person picks the route to run (the
    item shows the router's decision and top scores); under a vote, the tally; else they write the
    answer. ``message`` (a template) is what the caller is told meanwhile."""

    queue: str = "human"
    _: KW_ONLY
    message: str = "Your request has been passed to a person ({queue})."
    timeout: float | None = None  # seconds until the item expires unresolved
    webhook: str | None = None  # POSTed each new item (else TURNOUT_QUEUE_WEBHOOK)
    name: str = ""
    kind: str = "escalate"

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        text = render(self.message, {**ctx.scope(value), "queue": self.queue}, where=f"escalation {self.queue!r}: ")
        key = current_key()
        res = ctx.resolutions.get(key)
        detail["queue"] = self.queue
        targets: Mapping[str, Node] | None = ctx.vars.get("_targets")
        if res is None:
            if not _can_wait():
                ctx.escalations.append({"queue": self.queue, "input": as_text(value), "step": self.name})
                detail["_status"] = "escalated"
                return text
            raise Suspended(key, self._ask(ctx, value, targets), text)
        _resolved(detail, res)
        if "route" in res:
            if targets is None or res["route"] not in targets:
                raise WorkflowError(f"escalation {self.queue!r}: route {res['route']!r} has no target here")
            sub = ctx.branch("r", route=res["route"], confidence=1.0)
            sub.meter = ctx.meter
            out = await targets[res["route"]].run(sub, value)
            ctx.outputs.update(sub.outputs)
            return out
        return res["answer"]

    def _ask(self, ctx: RunContext, value: Any, targets: Mapping[str, Node] | None) -> dict[str, Any]:
        d = ctx.vars.get("_decision")
        tally = ctx.vars.get("_tally")
        kind, choices, context = "answer", [], {}
        if targets is not None:
            kind = "route"
            choices = [r for r, t in targets.items() if not isinstance(t, Escalate)]
        if d is not None:
            top = sorted(dict(d.scores).items(), key=lambda kv: -kv[1])[:5]
            context = {"route": d.route, "chosen": d.chosen, "confidence": round(d.confidence, 4), "outcome": d.outcome,
                       "reason": d.reason[:300], "scores": dict(top), "router": ctx.vars.get("_router")}
        if tally is not None:
            context = {**context, "tally": tally, "answer": ctx.vars.get("answer"), "agreement": ctx.vars.get("agreement")}
            choices = choices or [a for a in tally if a]
        item = _item(ctx, value, queue=self.queue, step=self.name or "escalate", kind=kind, choices=choices, context=context,
                     timeout=self.timeout, webhook=self.webhook)
        item["router"] = ctx.vars.get("_router")
        return item


@dataclass
class Approve(Node):
    """A person approves the output so far before the run goes on (when ``when`` holds, a template
    like ``"{steps.refund.amount} > 100"``; always without it). Approved: the output passes on
    unchanged (or as the approver edited it); rejected: the step's output is ``rejected`` (a
    template with ``{reason}``), its status ``rejected``, and the chain it is in stops there."""

    queue: str = "approvals"
    _: KW_ONLY
    when: str | None = None
    message: str = "Waiting for approval ({queue})."
    rejected: str = "Not approved: {reason}"
    timeout: float | None = None
    webhook: str | None = None
    name: str = ""
    kind: str = "approve"

    def __post_init__(self) -> None:
        if self.when is not None and not self.when.strip():
            raise ConfigError("approve: when is empty")

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        where = f"step {self.name or 'approve'!r}: "
        scope = {**ctx.scope(value), "queue": self.queue}
        if self.when is not None:
            cond = render(self.when, scope, where=where)
            detail["when"] = cond[:200]
            if not condition_holds(cond, where=where):
                detail["approval"] = "not needed"
                return value
        key = current_key()
        res = ctx.resolutions.get(key)
        detail["queue"] = self.queue
        if res is None:
            if not _can_wait():
                raise WorkflowError(f"{where}an approval needs a trace store to hold the run until someone answers "
                                    "(Workflow.run(..., store=...); turnout run uses .turnout/turnout.db)")
            raise Suspended(key, _item(ctx, value, queue=self.queue, step=self.name or "approve", kind="approve",
                                       choices=["approve", "reject"], context={"when": detail.get("when")},
                                       timeout=self.timeout, webhook=self.webhook), render(self.message, scope, where=where))
        _resolved(detail, res)
        if res.get("approved"):
            return res.get("answer", value)
        detail["_status"] = "rejected"
        return render(self.rejected, {**scope, "reason": res.get("note") or "rejected"}, where=where)


def is_rejected(ctx: RunContext) -> bool:
    """The step that just finished was an approval that was refused (its chain stops)."""
    return bool(ctx.steps) and ctx.steps[-1].status == "rejected"

