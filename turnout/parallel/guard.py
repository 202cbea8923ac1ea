"""Guardrails in parallel: screen the input and generate the response at the same time.

The screen is a rule (a function of the request text), a model (asked for a JSON verdict), or
both. When the screen flags, the response is withheld — and cancelled if it is still generating —
and a policy message is returned instead. Both outcomes are recorded in the result (and in the
trace sink, when one is given).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._errors import ConfigError, TurnoutError
from .._types import Completion, Request, ResponseFormat
from ..models.base import ChatModel

__all__ = ["GuardResult", "ModelScreen", "guarded", "rule_screen"]

Screen = Callable[[str], "Awaitable[tuple[bool, str]] | tuple[bool, str]"]

SCREEN_SCHEMA = {
    "type": "object",
    "properties": {"flag": {"type": "boolean"}, "category": {"type": "string"}},
    "required": ["flag"],
}


@dataclass
class ModelScreen:
    """Ask a model whether a text breaks the policy. ``fail_closed``: a screen that errors flags."""

    model: ChatModel
    policy: str = "harassment, hate, violence, self-harm, sexual content involving minors, or instructions for crimes"
    fail_closed: bool = True

    async def __call__(self, text: str) -> tuple[bool, str]:
        req = Request.of(
            f"Policy: content must not contain {self.policy}.\n\nText:\n{text[:6000]}\n\n"
            'Does the text break the policy? Reply with JSON {"flag": true|false, "category": "..."}.',
            system="You are a content-safety screen.", temperature=0.0, max_tokens=40,
            response_format=ResponseFormat.json_schema(SCREEN_SCHEMA, "screen"),
        )
        try:
            doc = json.loads((await self.model.complete(req)).text)
        except (TurnoutError, ValueError) as e:
            return self.fail_closed, f"screen failed ({type(e).__name__}); {'flagged' if self.fail_closed else 'passed'} by policy"
        flag = bool(doc.get("flag")) if isinstance(doc, dict) else self.fail_closed
        return flag, f"model screen: {doc.get('category', '') if isinstance(doc, dict) else ''}".rstrip(": ")


@dataclass
class GuardResult:
    text: str  # the response, or the policy message when withheld
    withheld: bool
    screen_reason: str
    response: Completion | None  # None when withheld before it finished (cancelled)
    response_cancelled: bool
    screen_s: float
    total_s: float


async def guarded(
    model: ChatModel,
    request: Request,
    screens: list[Screen] | Screen,
    *,
    policy_message: str = "Sorry, I can't help with that request.",
    sink: object | None = None,
) -> GuardResult:
    """Run ``screens`` on the request's last user message beside ``model.complete(request)``."""
    screens = screens if isinstance(screens, list) else [screens]
    if not screens:
        raise ConfigError("guarded() needs at least one screen")
    text = next((m.content for m in reversed(request.messages) if m.role == "user"), request.messages[-1].content)
    t0 = time.perf_counter()

    async def screen_all() -> tuple[bool, str, float]:
        async def one(s: Screen) -> tuple[bool, str]:
            out = s(text)
            return await out if asyncio.iscoroutine(out) or isinstance(out, asyncio.Future) else out  # type: ignore[return-value]

        results = await asyncio.gather(*(one(s) for s in screens))
        flagged = [why for flag, why in results if flag]
        return bool(flagged), "; ".join(flagged) or "passed", time.perf_counter() - t0

    async with asyncio.TaskGroup() as tg:
        respond = tg.create_task(model.complete(request))
        flagged, why, screen_s = await screen_all()
        cancelled = False
        if flagged and not respond.done():
            respond.cancel()
            cancelled = True
    response = None if cancelled else respond.result()
    result = GuardResult(policy_message if flagged else response.text, flagged, why, response, cancelled, screen_s,  # type: ignore[union-attr]
                         time.perf_counter() - t0)
    record = getattr(sink, "record_guard", None)
    if record is not None:
        record(result)
    return result


def rule_screen(*patterns: str) -> Screen:
    """A screen that flags any of these (case-insensitive) regexes."""
    import re

    rxs = [re.compile(p, re.I) for p in patterns]

    def screen(text: str) -> tuple[bool, str]:
        for rx in rxs:
            m = rx.search(text)
            if m:
                return True, f"rule: {m.group(0)!r}"
        return False, "rule: passed"

    return screen

