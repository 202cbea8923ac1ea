"""LLMRouter: a model picks one label out of the route set, under a JSON schema (an enum).

The schema also offers ``"none"`` so the model can say no route fits. Labels are normalised (case,
spaces, hyphens, synonyms); anything outside the route set is an abstention — never a KeyError and
never a default route in disguise. Confidence comes from token log-probabilities where the backend
gives them (the probability of the tokens that spell the chosen label), else from the agreement of
``samples`` completions. Model errors and timeouts become abstentions with the reason, so a
cascade moves on.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .._errors import ConfigError, TurnoutError
from .._secrets import describe
from .._types import Completion, Request, ResponseFormat
from ..models.base import ChatModel
from .base import Decision, Recorded, Route, RouteInput, check_policy_routes, check_routes, finalize, input_text, logged_many

__all__ = ["LLMRouter", "normalise_label"]

NONE_LABEL = "none"
_PROMPT_CACHE = 4096  # shortlists' prompts kept (a cascade's earlier stage ranks few distinct sets)
_Prompt = tuple[str, dict[str, Any], dict[str, str]]


def _norm(s: str) -> str:
    return re.sub(r"[\s\-_/]+", "_", s.strip().strip("\"'`.").lower())


def normalise_label(label: object, table: dict[str, str]) -> str | None:
    """Map a model's label onto a route name via ``table`` (normalised name/synonym -> route)."""
    if not isinstance(label, str):
        return None
    return table.get(_norm(label))


def label_probability(c: Completion, label: str) -> float | None:
    """P(label) from the log-probabilities of the tokens that spell the JSON value, or None."""
    if not c.logprobs:
        return None
    toks = [t for t, _, _ in c.logprobs]
    text = "".join(toks)
    m = re.search(r'"route"\s*:\s*"', text)
    if not m:
        return None
    start, end = m.end(), m.end() + len(label)
    pos, logp, used = 0, 0.0, False
    for tok, lp, _ in c.logprobs:
        a, b = pos, pos + len(tok)
        pos = b
        if b <= start or a >= end:
            continue
        logp += lp
        used = True
    return math.exp(logp) if used else None


def _shots(r: Route, n: int) -> str:
    """Up to ``n`` of the route's example utterances, for the prompt."""
    ex = [u.replace("\n", " ")[:200] for u in r.utterances[:n]]
    return (" (e.g. " + "; ".join(json.dumps(u) for u in ex) + ")") if ex else ""


class LLMRouter(Recorded):
    kind = "llm"

    def __init__(
        self,
        routes: Sequence[Route],
        model: ChatModel,
        *,
        samples: int = 1,
        temperature: float | None = None,
        use_logprobs: bool = True,
        instructions: str = "",
        fallback: str | None = None,
        escalation: str | None = None,
        escalate_below: float = 0.0,
        timeout: float | None = 60.0,
        max_chars: int = 8000,
        examples: int = 0,
        concurrency: int | None = None,
        name: str = "llm",
    ) -> None:
        who = f"LLMRouter {name!r}"
        self.routes = check_routes(routes, who=who)
        check_policy_routes(list(self.routes), fallback, escalation, who=who)
        if samples < 1:
            raise ConfigError(f"{who}: samples must be >= 1")
        if examples < 0 or (concurrency is not None and concurrency < 1):
            raise ConfigError(f"{who}: examples must be >= 0 and concurrency >= 1")
        # the model chooses among routes it can be told about; escalation routes are the router's to pick
        self.choices = [r for r in routes if r.name != escalation]
        self.model = model
        self.samples = samples
        self.temperature = temperature if temperature is not None else (0.0 if samples == 1 else 0.8)
        self.use_logprobs = use_logprobs
        self.instructions = instructions
        self.fallback, self.escalation, self.escalate_below = fallback, escalation, escalate_below
        self.timeout = timeout  # per model call, from when the model starts on it (not the wait for a slot)
        self.max_chars = max_chars
        self.examples = examples
        # decisions in flight at once: by default as many as the model has slots (the embedded model's
        # ``parallel``), else 8; more only queue at the model
        self.concurrency = concurrency or getattr(model, "parallel", None) or 8
        self.name = name
        self._prompts: dict[tuple[str, ...], _Prompt] = {}
        self.system, self.schema, self.table = self._prompt(tuple(r.name for r in self.choices))

    def _prompt(self, names: tuple[str, ...]) -> _Prompt:
        """The system prompt, the answer schema and the label table for choosing among ``names``
        (the whole route set, or a shortlist a cascade's earlier stage ranked), built once per set."""
        got = self._prompts.get(names)
        if got is not None:
            return got
        unknown = [n for n in names if n not in self.routes or n == self.escalation]
        if unknown:
            raise ConfigError(f"LLMRouter {self.name!r}: cannot choose {', '.join(map(repr, unknown))} (not among its routes)")
        choices = [self.routes[n] for n in names]
        table: dict[str, str] = {}
        for r in choices:
            for alias in (r.name, *r.synonyms):
                table[_norm(alias)] = r.name
        enum = [r.name for r in choices] + [NONE_LABEL]
        schema = {"type": "object", "properties": {"route": {"type": "string", "enum": enum}}, "required": ["route"]}
        lines = [f"- {r.name}: {r.description or r.name}" + _shots(r, self.examples) for r in choices]
        system = (
            "You are a router. Read the user's message and choose the single best route for it.\n"
            "Routes:\n" + "\n".join(lines) + f"\n- {NONE_LABEL}: none of the routes fits.\n"
            + (self.instructions + "\n" if self.instructions else "")
            + 'Answer with JSON only: {"route": "<route name>"}.'
        )
        if len(self._prompts) >= _PROMPT_CACHE:
            self._prompts.clear()
        got = self._prompts[names] = (system, schema, table)
        return got

    def _prompt_for(self, among: Sequence[str] | None) -> _Prompt:
        """The prompt for a shortlist, or for every route when there is none."""
        return self._prompt(tuple(among)) if among else (self.system, self.schema, self.table)

    def shortlist(self, ranked: Sequence[str], k: int) -> tuple[str, ...]:
        """The first ``k`` of ``ranked`` (best first) that this router may choose, in that order."""
        mine = {r.name for r in self.choices}
        return tuple([n for n in ranked if n in mine][:k])

    @property
    def route_names(self) -> list[str]:
        return list(self.routes)

    def request(self, text: str, seed: int | None = None, among: Sequence[str] | None = None) -> Request:
        system, schema, _ = self._prompt_for(among)
        return Request.of(
            text[: self.max_chars], system=system, temperature=self.temperature, max_tokens=24, seed=seed,
            response_format=ResponseFormat.json_schema(schema, "route"),
            logprobs=3 if (self.use_logprobs and self.samples == 1) else None, timeout=self.timeout,
            metadata={"router": self.name},
        )

    def _parse(self, c: Completion, table: dict[str, str]) -> tuple[str | None, str]:
        try:
            doc = json.loads(c.text)
        except ValueError:
            return None, f"unparseable answer {c.text[:60]!r}"
        label = doc.get("route") if isinstance(doc, dict) else None
        route = normalise_label(label, table)
        if route is None:
            return None, f"label {str(label)[:40]!r} is not a route" if label != NONE_LABEL else "model said none fits"
        return route, f"model chose {route}"

    async def _one(self, text: str, seed: int | None, among: Sequence[str] | None) -> tuple[Completion | None, str | None]:
        try:
            return await self.model.complete(self.request(text, seed, among)), None
        except ConfigError:
            raise
        except (TimeoutError, TurnoutError) as e:
            return None, f"LLM error: {describe(e)[:160]}"

    async def decision(self, x: RouteInput, among: Sequence[str] | None = None) -> Decision:
        """Route ``x``; ``among`` narrows the choice to those routes (a shortlist, best first)."""
        t0 = time.perf_counter()
        text = input_text(x)
        note = f"; input cut to {self.max_chars} characters" if len(text) > self.max_chars else ""
        if not text.strip():
            raw = Decision(None, 0.0, {}, "llm", "empty input", 0.0, "abstained", None, self.name)
            return finalize(raw, fallback=self.fallback, escalation=None, escalate_below=0.0, t0=t0)
        among = tuple(among) if among else None
        table = self._prompt_for(among)[2]
        results = await asyncio.gather(*(self._one(text, None if self.samples == 1 else 1000 + i, among) for i in range(self.samples)))
        cost = sum(c.cost_usd for c, _ in results if c is not None)
        labels: list[str | None] = []
        reasons: list[str] = []
        for c, err in results:
            if c is None:
                labels.append(None)
                reasons.append(err or "error")
            else:
                r, why = self._parse(c, table)
                labels.append(r)
                reasons.append(why)
        if self.samples == 1:
            route = labels[0]
            c = results[0][0]
            p = label_probability(c, route) if (route is not None and c is not None) else None
            conf = p if p is not None else (1.0 if route is not None else 0.0)
            scores = {route: round(conf, 4)} if route is not None else {}
            if p is not None:
                reason = reasons[0] + f" (p={p:.2f} from logprobs)"
            else:
                reason = reasons[0] + ("; no logprobs from this backend: confidence is not calibrated (use samples > 1)"
                                       if route is not None else "")
        else:
            votes = Counter(label for label in labels if label is not None)
            route, n = votes.most_common(1)[0] if votes else (None, 0)
            conf = n / self.samples
            scores = {k: round(v / self.samples, 4) for k, v in votes.items()}
            reason = f"{n}/{self.samples} samples chose {route}" if route else "; ".join(dict.fromkeys(reasons))
        if among:
            note += f"; among {len(among)} shortlisted"
        raw = Decision(route, conf, scores, "llm", reason + note, 0.0, "matched" if route else "abstained", route, self.name, cost)
        return finalize(raw, fallback=self.fallback, escalation=self.escalation, escalate_below=self.escalate_below, t0=t0)

    async def decisions(self, xs: Sequence[RouteInput], *, concurrency: int | None = None,
                        among: Sequence[Sequence[str] | None] | None = None) -> list[Decision]:
        """Many inputs, at most ``concurrency`` (default ``self.concurrency``) decisions at a time
        (results in input order); ``among[i]`` is input i's shortlist (None: every route)."""
        if among is not None and len(among) != len(xs):
            raise ValueError(f"LLMRouter {self.name!r}: {len(among)} shortlists for {len(xs)} inputs")
        sem = asyncio.Semaphore(max(1, concurrency or self.concurrency))

        async def one(i: int) -> Decision:
            async with sem:
                return await self.decision(xs[i], among[i] if among is not None else None)

        return list(await asyncio.gather(*(one(i) for i in range(len(xs)))))

    async def decide_many(self, xs: Sequence[RouteInput], *, concurrency: int | None = None) -> list[Decision]:
        return logged_many(self, xs, await self.decisions(xs, concurrency=concurrency))
