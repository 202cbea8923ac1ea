"""Voting: the same task N times (or across a panel of models/prompts), answers extracted and
normalised, tallied by a pure function, ties settled by an explicit policy, and sampling stopped
as soon as the outcome is decided.

Extraction makes "42", "42.0" and "The answer is 42." one vote; an answer nothing can be extracted
from is an abstaining vote, counted and reported. Tallies (``plurality``, ``majority``,
``unanimity``, ``threshold(q)``, any of them weighted by model) are pure functions of the votes.

Early stopping (``early_stop=``):
- ``"decided"``: stop when the votes still to come cannot change the winner;
- ``"beta"``: Adaptive-Consistency style — stop when P(leader's true share > runner-up's), under a
  uniform Beta prior on the two leading answers, reaches ``confidence_level``;
- ``"predictive"``: stop when P(the full vote of ``n`` would end with the same winner) reaches
  ``confidence_level`` (:func:`keep_probability`: Beta-binomial over the votes still to come, the
  rest assumed to go to the runner-up). It knows how many votes are left, so it stops earlier on a
  short vote than ``"beta"`` does; a tie at the top never stops it. ``prior=`` (a :class:`VotePrior`
  fitted to logged votes) tells it how often the model agrees with itself.
Samples run ``wave`` at a time through the fan-out engine, so stopping saves real calls (and
cancels the ones in flight).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .. import _telemetry
from .._constants import SAMPLE_SEED, SAMPLE_TEMPERATURE, VOTE_TIE
from .._errors import ConfigError
from .._scope import active_run
from .._types import Completion, Request
from ..models.base import ChatModel
from .engine import fan_out
from .escalate import escalate, judge_tie, low_agreement
from .prior import VotePrior, beta_binomial, fit_prior

__all__ = [
    "Verdict",
    "Vote",
    "VotePrior",
    "beta_confidence",
    "extract_json_field",
    "extract_label",
    "extract_number",
    "extract_regex",
    "extract_text",
    "escalate",
    "fit_prior",
    "is_decided",
    "judge_tie",
    "keep_probability",
    "low_agreement",
    "tally",
    "threshold",
    "vote",
]

Extractor = Callable[[str], "str | None"]

# -- extraction ---------------------------------------------------------------------------------
_SPACES = re.compile(r"\s+")
_NUM = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def normalise_number(s: str) -> str | None:
    try:
        v = float(s.replace(",", ""))
    except ValueError:
        return None
    if math.isnan(v) or math.isinf(v):
        return None
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(round(v, 10))


def extract_number(text: str) -> str | None:
    """The last number in the text, normalised: "42", "42.0", "The answer is 42." and "4.2e1" -> "42"."""
    nums = _NUM.findall(text or "")
    return normalise_number(nums[-1]) if nums else None


def extract_text(text: str) -> str | None:
    """The whole answer, case- and whitespace-normalised, trailing punctuation dropped."""
    s = _SPACES.sub(" ", (text or "").strip().lower()).rstrip(".!")
    return s or None


def extract_label(labels: Sequence[str], synonyms: Mapping[str, str] | None = None) -> Extractor:
    """One label out of a set: an exact (normalised) match, else the only label named in the text."""
    norm = {re.sub(r"[\s_-]+", " ", x.lower()).strip(): x for x in labels}
    for k, v in (synonyms or {}).items():
        norm[re.sub(r"[\s_-]+", " ", k.lower()).strip()] = v
    pats = {k: re.compile(rf"\b{re.escape(k)}\b") for k in norm}

    def extract(text: str) -> str | None:
        t = re.sub(r"[\s_-]+", " ", (text or "").lower()).strip().strip(".\"'!")
        if t in norm:
            return norm[t]
        found = {norm[k] for k, p in pats.items() if p.search(t)}
        return found.pop() if len(found) == 1 else None

    return extract


def extract_json_field(path: str, *, as_number: bool = False) -> Extractor:
    """A field of a JSON answer (dotted path, list indices allowed); numbers normalised."""
    keys = path.split(".")

    def extract(text: str) -> str | None:
        m = re.search(r"\{.*\}|\[.*\]", text or "", re.S)
        try:
            v: Any = json.loads(m.group(0) if m else text)
        except (ValueError, TypeError):
            return None
        for k in keys:
            if isinstance(v, dict) and k in v:
                v = v[k]
            elif isinstance(v, list) and k.isdigit() and int(k) < len(v):
                v = v[int(k)]
            else:
                return None
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (int, float)) or as_number:
            return normalise_number(str(v))
        return extract_text(str(v)) if v is not None else None

    return extract


def extract_regex(pattern: str, group: int | str = 1, *, number: bool = False) -> Extractor:
    rx = re.compile(pattern, re.I | re.S)

    def extract(text: str) -> str | None:
        m = rx.search(text or "")
        if not m:
            return None
        g = m.group(group)
        return normalise_number(g) if number else extract_text(g)

    return extract


# -- votes and verdicts ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Vote:
    key: str | None  # the normalised answer; None = abstained (nothing could be extracted)
    raw: str
    source: str = ""  # model (or panel member) that cast it
    weight: float = 1.0
    index: int = 0
    cost_usd: float = 0.0


VerdictOutcome = Literal["decided", "tie", "no_decision", "no_votes", "judged", "escalated"]


@dataclass(frozen=True)
class Verdict:
    """What a vote decided. Frozen: the steps after the tally (judging a tie, escalating) return a
    new one (``dataclasses.replace``)."""

    answer: str | None
    agreement: float  # the winner's share of the (weighted) valid votes
    confidence: float
    counts: dict[str, float]
    votes: list[Vote]
    outcome: VerdictOutcome
    reason: str
    samples_used: int = 0
    samples_planned: int = 0
    abstained: int = 0
    tied: list[str] = field(default_factory=list)
    cost_usd: float = 0.0

    @property
    def samples_saved(self) -> int:
        return self.samples_planned - self.samples_used


Rule = Literal["plurality", "majority", "unanimity"] | float  # a float q: the winner needs a share >= q
TiePolicy = Literal["escalate", "weight_order", "first_seen", "judge"]

# The one set of voting defaults lives in _constants (vote/tally, sampler, the workflow vote step and
# bench/voting.py all take them from there).
DEFAULT_TIE: TiePolicy = VOTE_TIE


def threshold(q: float) -> float:
    """``rule=threshold(0.6)``: the winner needs at least 60% of the valid votes."""
    if not 0 < q <= 1:
        raise ConfigError(f"a threshold quorum is a share in (0, 1], not {q}")
    return q


def _counts(votes: Sequence[Vote], weights: Mapping[str, float] | None) -> tuple[dict[str, float], dict[str, int]]:
    counts: dict[str, float] = {}
    first: dict[str, int] = {}
    for v in votes:
        if v.key is None:
            continue
        w = weights.get(v.source, v.weight) if weights else v.weight
        counts[v.key] = counts.get(v.key, 0.0) + w
        first.setdefault(v.key, v.index)
    return counts, first


def tally(
    votes: Sequence[Vote],
    *,
    rule: Rule = "plurality",
    tie: TiePolicy = DEFAULT_TIE,
    weights: Mapping[str, float] | None = None,
    source_order: Sequence[str] = (),
) -> Verdict:
    """Pure: the verdict of these votes under ``rule``, with ties settled by ``tie``.

    ``weights`` maps a vote's source (model) to its weight; ``source_order`` ranks sources for
    ``tie="weight_order"`` (default: by weight, then first seen). ``tie="judge"`` leaves the tie
    for the caller's judge (``outcome="tie"``, ``tied`` lists the candidates).
    """
    counts, first = _counts(votes, weights)
    abstained = sum(1 for v in votes if v.key is None)
    total = sum(counts.values())
    used = len(votes)
    cost = sum(v.cost_usd for v in votes)
    if not counts:
        return Verdict(None, 0.0, 0.0, {}, list(votes), "no_votes", f"no usable answer in {used} votes", used, used, abstained, cost_usd=cost)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], first[kv[0]]))
    top = ranked[0][1]
    tied = [k for k, c in ranked if abs(c - top) < 1e-9]
    share = top / total
    base = dict(counts=dict(ranked), votes=list(votes), samples_used=used, samples_planned=used, abstained=abstained, cost_usd=cost)
    if len(tied) > 1 and rule != "unanimity":
        if tie == "first_seen":
            win = min(tied, key=lambda k: first[k])
            return Verdict(win, share, share, outcome="decided", reason=f"tie between {tied}; first seen wins", tied=tied, **base)  # type: ignore[arg-type]
        if tie == "weight_order":
            order = list(source_order) or sorted({v.source for v in votes}, key=lambda s: -(weights or {}).get(s, 1.0))
            rank = {s: i for i, s in enumerate(order)}
            best = min((v for v in votes if v.key in tied), key=lambda v: (rank.get(v.source, len(rank)), v.index))
            return Verdict(best.key, share, share, outcome="decided", reason=f"tie between {tied}; {best.source or 'first source'} ranks first",
                           tied=tied, **base)  # type: ignore[arg-type]
        return Verdict(None, share, share, outcome="tie", reason=f"tie between {', '.join(tied)}", tied=tied, **base)  # type: ignore[arg-type]
    win = ranked[0][0]
    if rule == "unanimity" and len(counts) > 1:
        return Verdict(None, share, share, outcome="no_decision", reason=f"not unanimous: {dict(ranked)}", **base)  # type: ignore[arg-type]
    if rule == "majority" and not share > 0.5:
        return Verdict(None, share, share, outcome="no_decision", reason=f"no absolute majority ({share:.0%} for {win})", **base)  # type: ignore[arg-type]
    if isinstance(rule, float) and share < rule:
        return Verdict(None, share, share, outcome="no_decision", reason=f"{win} has {share:.0%} < {rule:.0%}", **base)  # type: ignore[arg-type]
    return Verdict(win, share, share, outcome="decided", reason=f"{win}: {top:g} of {total:g} votes ({share:.0%})", **base)  # type: ignore[arg-type]


def beta_confidence(leader: float, runner_up: float) -> float:
    """P(p_leader > p_runner_up | counts) with a uniform prior: P(Beta(a+1, b+1) > 1/2).

    For whole counts this is exactly P(Binomial(a+b+1, 1/2) <= a); fractional (weighted) counts are
    rounded down, which only makes stopping later.
    """
    a, b = int(leader), int(runner_up)
    n = a + b + 1
    return sum(math.comb(n, k) for k in range(a + 1)) / 2**n


def is_decided(
    votes: Sequence[Vote], planned: int, *, rule: Rule = "plurality", mode: str = "decided", level: float = 0.95,
    weights: Mapping[str, float] | None = None, prior: VotePrior | None = None,
) -> bool:
    """Pure: can sampling stop? ``planned`` is the total votes that would be cast."""
    counts, _ = _counts(votes, weights)
    remaining = max(0, planned - len(votes))
    if remaining == 0:
        return True
    if not counts:
        return False
    ranked = sorted(counts.values(), reverse=True)
    lead, second = ranked[0], (ranked[1] if len(ranked) > 1 else 0.0)
    w_max = max((weights or {}).values(), default=1.0) if weights else 1.0
    if mode == "beta":
        return beta_confidence(lead, second) >= level
    if mode == "predictive":
        return _decided_exactly(counts, lead, second, remaining, rule, w_max) or \
            keep_probability(votes, planned, rule=rule, weights=weights, prior=prior) >= level
    return _decided_exactly(counts, lead, second, remaining, rule, w_max)


def _decided_exactly(counts: Mapping[str, float], lead: float, second: float, remaining: int, rule: Rule, w_max: float) -> bool:
    if rule == "unanimity":
        return len(counts) > 1  # already failed; more votes cannot make it unanimous
    if rule == "majority":
        total_max = sum(counts.values()) + remaining * w_max
        return lead > total_max / 2 or lead + remaining * w_max <= (total_max / 2)
    return lead - second > remaining * w_max  # plurality (and threshold): the runner-up cannot catch up


def keep_probability(votes: Sequence[Vote], planned: int, *, rule: Rule = "plurality",
                     weights: Mapping[str, float] | None = None, prior: VotePrior | None = None) -> float:
    """Pure: P(the full vote of ``planned`` samples ends with the current leader winning under ``rule``).

    The leader's share of future valid votes is Beta(leader votes − 1 + α, other votes + β) for the
    prior (α, β) — by default (2, 1), i.e. Beta(leader + 1, others + 1), uniform; a fitted one
    (:func:`fit_prior`) says how often this model agrees with itself — and the remaining votes are
    Beta-binomial. Conservatively, every remaining vote the leader does not get goes to the
    runner-up (at the largest weight), every one it gets counts at the smallest weight, and a tie
    counts as a change. 0.0 when there is no leader yet.
    """
    counts, _ = _counts(votes, weights)
    if not counts:
        return 0.0
    remaining = max(0, planned - len(votes))
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    leader, lead = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0.0
    total = sum(counts.values())
    w_lo, w_hi = (min(weights.values()), max(weights.values())) if weights else (1.0, 1.0)
    n_lead = sum(1 for v in votes if v.key == leader)
    n_other = sum(1 for v in votes if v.key is not None) - n_lead

    def wins(k: int) -> bool:  # the leader gets k of the remaining votes, the runner-up the rest
        mine, theirs = lead + k * w_lo, second + (remaining - k) * w_hi
        if rule == "unanimity":
            return len(counts) == 1 and k == remaining
        final_total = total + k * w_lo + (remaining - k) * w_hi
        if rule == "majority":
            return mine > final_total / 2
        if isinstance(rule, float):
            return mine > theirs and mine >= rule * final_total
        return mine > theirs

    p = prior or VotePrior()
    a, b = n_lead - 1 + p.alpha, n_other + p.beta
    return sum(beta_binomial(k, remaining, a, b) for k in range(remaining + 1) if wins(k))


# -- the driver ---------------------------------------------------------------------------------
Sampler = Callable[[int], Awaitable["Completion | str"]]


async def vote(
    sample: Sampler,
    n: int,
    *,
    extract: Extractor = extract_text,
    rule: Rule = "plurality",
    tie: TiePolicy = DEFAULT_TIE,
    weights: Mapping[str, float] | None = None,
    sources: Sequence[str] | None = None,
    early_stop: Literal["decided", "beta", "predictive"] | None = "decided",
    confidence_level: float = 0.95,
    prior: VotePrior | None = None,
    min_samples: int = 2,
    wave: int = 2,
    timeout: float | None = None,
    judge: ChatModel | None = None,
    question: str = "",
    escalate_below: float | None = None,
    on_escalate: Callable[[Verdict], Awaitable[Verdict | None]] | None = None,
    name: str = "vote",
) -> Verdict:
    """Cast up to ``n`` votes, ``sample(i)`` producing the i-th answer, ``wave`` at a time.

    ``sources[i]`` names who cast vote i (for weights and ``tie="weight_order"``). ``prior`` (for
    ``early_stop="predictive"``) is what the model's logged votes say about its self-agreement
    (:func:`fit_prior`, :meth:`VotePrior.from_store`); without it the rule assumes nothing. With
    ``escalate_below``, a verdict whose agreement is lower calls ``on_escalate`` (e.g. ask a stronger
    model or queue for a person); what it returns replaces the verdict. Those two are steps of their
    own (``judge_tie``, ``escalate``; ``low_agreement`` is the rule ``VoteStep`` and the escalation
    cascade use too), run here after the pure ``tally``. Inside ``with store.run(...)`` the verdict
    is recorded under ``name``.
    """
    _check_vote(n, tie, judge, early_stop)

    def stop_when(envs: list[Any]) -> bool:
        if early_stop is None:
            return False
        done = [e.value for e in envs if e is not None and e.status == "ok"]
        failed = sum(1 for e in envs if e is not None and e.status != "ok")
        if len(done) < min_samples:
            return False
        return is_decided(done, n - failed, rule=rule, mode=early_stop, level=confidence_level, weights=weights, prior=prior)

    with _telemetry.span(f"vote {name}", {"turnout.vote.planned": n, "turnout.vote.rule": str(rule)}) as s:
        res = await fan_out([_branch(sample, i, extract, sources) for i in range(n)], concurrency=max(1, wave), timeout=timeout,
                            stop_when=stop_when)
        cast = [e.value for e in res.envelopes if e.status == "ok"]
        v = _with_run(tally(cast, rule=rule, tie=tie, weights=weights, source_order=list(dict.fromkeys(sources)) if sources else ()),  # type: ignore[arg-type]
                      res, n, cast)
        if v.outcome == "tie" and tie == "judge" and judge is not None:
            v = await judge_tie(v, judge, question)
        if escalate_below is not None and on_escalate is not None:
            v = await escalate(v, escalate_below, on_escalate)
        _trace_verdict(s, v)
    a = active_run()
    if a is not None:
        a[0].record_verdict(v, name=name, run_id=a[1])
    return v


def _trace_verdict(span: Any, v: Verdict) -> None:
    """The verdict on the vote's span; with tracing off there is no span and the tally is never serialised."""
    if span is not None:
        _telemetry.set_attributes(span, {"turnout.vote.answer": v.answer, "turnout.vote.outcome": v.outcome,
                                         "turnout.vote.agreement": v.agreement, "turnout.vote.samples": v.samples_used,
                                         "turnout.vote.tally": json.dumps(v.counts)})


def _check_vote(n: int, tie: str, judge: ChatModel | None, early_stop: str | None) -> None:
    if n < 1:
        raise ConfigError("vote() needs n >= 1")
    if tie == "judge" and judge is None:
        raise ConfigError('tie="judge" needs judge=<a ChatModel>')
    if early_stop not in (None, "decided", "beta", "predictive"):
        raise ConfigError(f'early_stop must be "decided", "beta", "predictive" or None, not {early_stop!r}')


def _with_run(v: Verdict, res: Any, n: int, cast: list[Vote]) -> Verdict:
    """The tally with what the sampling did: samples planned and used, cost, failures, an early stop."""
    errors = [e for e in res.envelopes if e.status in ("error", "timeout")]
    why = v.reason
    if errors:
        why += f"; {len(errors)} samples failed ({', '.join(sorted({e.status for e in errors}))})"
    if res.stopped_early:
        why += f"; stopped early after {res.started} of {n} samples"
    return replace(v, samples_planned=n, samples_used=res.started, cost_usd=sum(x.cost_usd for x in cast), reason=why)


def _branch(sample: Sampler, i: int, extract: Extractor, sources: Sequence[str] | None) -> Callable[[], Awaitable[Vote]]:
    """Vote ``i``: the i-th sample, its answer extracted, its source (``sources[i]`` or the model)."""
    async def run() -> Vote:
        out = await sample(i)
        raw = out.text if isinstance(out, Completion) else str(out)
        src = sources[i] if sources else (out.model if isinstance(out, Completion) else "")
        return Vote(extract(raw), raw, src, 1.0, i, out.cost_usd if isinstance(out, Completion) else 0.0)
    return run


def sample_params(i: int, temperature: float | None = None, *, default: float = SAMPLE_TEMPERATURE, seed: int = SAMPLE_SEED) -> tuple[float, int]:
    """The temperature and seed of vote sample ``i``: a request's own temperature unless it is unset
    or greedy (0, which would make every sample the same), then ``default``; seed ``seed + i``."""
    return (temperature if temperature not in (None, 0.0) else default), seed + i  # type: ignore[return-value]


def sampler(model: ChatModel, request: Request, *, temperature: float = SAMPLE_TEMPERATURE, seed: int = SAMPLE_SEED) -> Sampler:
    """Samples of one request from one model: the given temperature (unless the request sets its
    own), a different seed each (``sample_params``)."""

    async def run(i: int) -> Completion:
        t, s = sample_params(i, request.temperature, default=temperature, seed=seed)
        return await model.complete(request.with_(temperature=t, seed=s))

    return run


def panel(members: Sequence[tuple[ChatModel, Request]]) -> tuple[Sampler, list[str]]:
    """A panel of (model, request) pairs: vote i goes to member i. Returns (sampler, sources)."""
    async def run(i: int) -> Completion:
        m, r = members[i]
        return await m.complete(r)

    return run, [m.name for m, _ in members]
