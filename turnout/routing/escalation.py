"""Agreement-gated escalation (FrugalGPT-style): answer with the cheap model, sampled k times through
the voting engine (vote 0 is its greedy answer, the others are samples at ``temperature``); if the
votes agree enough (and the verifier, if any, accepts), the majority answers; otherwise ask the
next tier up. The last tier's answer is final.

Thresholds are per tier and fittable: ``sweep(records)`` gives accuracy and cost for every
threshold from labelled ``CascadeRecord``s, and ``fit_threshold(records, target_accuracy)`` picks the
cheapest threshold that reaches the target (used by ``turnout models eval``).

Compliance: with a ``catalog``, a tier whose model may not receive the request's data classes is
skipped (recorded), and if no tier may receive them the cascade refuses with ``ComplianceError``
before any call. (The catalog's own guards would refuse anyway; skipping first saves the call.)
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ComplianceError, ConfigError
from .._types import Completion, Price, Request, StreamChunk
from ..models.base import ChatModel
from ..parallel.voting import Extractor, Verdict, extract_text, low_agreement, vote
from .base import Decision, logged

DEFAULT_THRESHOLD = 0.6  # a tier answers when at least this share of its votes agree

__all__ = ["CascadeAnswer", "CascadeRecord", "EscalationCascade", "Tier", "fit_threshold", "sweep"]

Verifier = Callable[[Request, str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Tier:
    """One rung: ``model`` (a catalog name or a ChatModel), ``samples`` (k votes; 1 = no voting) and
    ``threshold`` (the agreement needed to stop here; ignored on the last tier)."""

    model: str | ChatModel
    samples: int = 3
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"tier {self.label}: samples must be >= 1, got {self.samples}")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"tier {self.label}: threshold is an agreement share in [0, 1], got {self.threshold}")

    @property
    def label(self) -> str:
        return self.model if isinstance(self.model, str) else self.model.name


@dataclass
class CascadeAnswer:
    answer: str | None  # the normalised (extracted) answer
    text: str  # a raw answer that carries it
    model: str  # the model that answered
    tier: int
    agreement: float
    verdicts: list[Verdict]
    steps: list[str] = field(default_factory=list)  # why it stopped or went up, per tier
    cost_usd: float = 0.0
    calls: int = 0
    latency_s: float = 0.0

    @property
    def escalated(self) -> bool:
        return self.tier > 0


class EscalationCascade:
    def __init__(
        self,
        tiers: Sequence[Tier],
        *,
        catalog: Any = None,
        extract: Extractor = extract_text,
        verifier: Verifier | None = None,
        temperature: float = 0.7,
        early_stop: str | None = "decided",
        wave: int = 2,
        seed: int = 1000,
        resolve: Callable[[str], ChatModel] | None = None,
        name: str = "escalation",
    ) -> None:
        if not tiers:
            raise ConfigError("EscalationCascade needs at least one tier")
        if catalog is None and resolve is None and any(isinstance(t.model, str) for t in tiers):
            raise ConfigError("EscalationCascade: tiers name catalog models, so pass catalog=")
        if resolve is None:
            for t in tiers:
                if isinstance(t.model, str) and t.model not in catalog:
                    raise ConfigError(f"EscalationCascade: unknown model {t.model!r} (catalog: {', '.join(catalog.names())})")
        self.resolve = resolve
        self.tiers, self.catalog, self.extract, self.verifier = list(tiers), catalog, extract, verifier
        self.temperature, self.early_stop, self.wave, self.seed, self.name = temperature, early_stop, wave, seed, name
        self.kind = "escalation"

    def _model(self, t: Tier) -> ChatModel:
        if not isinstance(t.model, str):
            return t.model
        return self.resolve(t.model) if self.resolve is not None else self.catalog.model(t.model)

    async def run(self, request: Request | str) -> CascadeAnswer:
        req = Request.of(request) if isinstance(request, str) else request
        t0 = time.perf_counter()
        classes = self.catalog.classes_of(req) if self.catalog is not None else frozenset()
        usable = []
        steps: list[str] = []
        for i, t in enumerate(self.tiers):
            if classes and isinstance(t.model, str) and t.model in self.catalog and not self.catalog.allowed(t.model, classes):
                steps.append(f"tier {i} {t.label}: skipped, may not receive {', '.join(sorted(classes))}")
                continue
            usable.append(i)
        if not usable:
            raise ComplianceError(sorted(classes), [t.label for t in self.tiers], "no tier of the cascade may receive them")
        verdicts: list[Verdict] = []
        cost, calls = 0.0, 0
        for n, i in enumerate(usable):
            t = self.tiers[i]
            last = n == len(usable) - 1
            m = self._model(t)
            v = await vote(self._sampler(m, req), t.samples, extract=self.extract,
                           early_stop=self.early_stop if t.samples > 1 else None, wave=self.wave,  # type: ignore[arg-type]
                           name=f"{self.name}.{t.label}")
            verdicts.append(v)
            cost += v.cost_usd
            calls += v.samples_used
            raw = next((x.raw for x in v.votes if x.key == v.answer and v.answer is not None), v.votes[0].raw if v.votes else "")
            ok = not low_agreement(v, t.threshold)
            why = f"agreement {v.agreement:.2f} over {v.samples_used} samples"
            if ok and self.verifier is not None:
                ok = await self.verifier(req, raw)
                why += "; verifier " + ("accepted" if ok else "rejected")
            if ok or last:
                steps.append(f"tier {i} {t.label}: {why} " + (f">= {t.threshold:.2f}: answered" if ok else "(last tier): answered"))
                ans = CascadeAnswer(v.answer, raw, t.label, i, v.agreement, verdicts, steps, cost, calls, time.perf_counter() - t0)
                d = Decision(t.label, v.agreement, {self.tiers[j].label: (1.0 if j == i else 0.0) for j in usable}, self.kind,
                             "; ".join(steps), ans.latency_s, "escalated" if i != usable[0] else "matched", t.label, f"tier {i}", cost)
                logged(self, req.messages[-1].content, d)
                return ans
            steps.append(f"tier {i} {t.label}: {why} < {t.threshold:.2f}: escalated" if low_agreement(v, t.threshold)
                         else f"tier {i} {t.label}: {why}: escalated")
        raise AssertionError("unreachable")

    def _sampler(self, m: ChatModel, req: Request) -> Callable[[int], Awaitable[Completion]]:
        """Vote 0 is the model's own answer (temperature 0); the others are samples at ``temperature``
        that measure how sure it is."""
        async def sample(i: int) -> Completion:
            return await m.complete(req.with_(temperature=0.0 if i == 0 else self.temperature, seed=self.seed + i))
        return sample

    def as_model(self) -> ChatModel:
        return _CascadeModel(self)


class _CascadeModel:
    """The cascade as a ChatModel: the text of the answer it settles on."""

    def __init__(self, cascade: EscalationCascade) -> None:
        self.cascade = cascade

    @property
    def name(self) -> str:
        return self.cascade.name

    @property
    def price(self) -> Price:
        t = self.cascade.tiers[-1]
        if isinstance(t.model, str):
            return self.cascade.catalog.spec(t.model).price if self.cascade.catalog is not None and t.model in self.cascade.catalog else Price()
        return t.model.price

    async def complete(self, request: Request) -> Completion:
        from .._types import Usage

        a = await self.cascade.run(request)
        return Completion(a.text, a.model, "stop", Usage(0, 0), a.cost_usd, a.latency_s)

    async def stream(self, request: Request) -> Any:
        c = await self.complete(request)
        yield StreamChunk(c.text, model=c.model)
        yield StreamChunk("", True, "stop", c.usage, c.cost_usd, c.latency_s, c.model)

    async def aclose(self) -> None:
        return None


# -- fitting -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CascadeRecord:
    """One labelled item under a two-tier cascade: the cheap tier's agreement, whether its answer was
    right, what it cost; whether the strong tier was right and what it cost."""

    agreement: float
    cheap_correct: bool
    cheap_cost: float
    strong_correct: bool
    strong_cost: float


def sweep(records: Sequence[CascadeRecord], thresholds: Sequence[float] | None = None) -> list[dict[str, float]]:
    """Accuracy, mean cost and escalation rate of the cascade at each threshold (pure)."""
    if not records:
        raise ConfigError("sweep needs at least one labelled outcome")
    ts = sorted(set(thresholds if thresholds is not None else [0.0, *(r.agreement for r in records), 1.01]))
    out = []
    n = len(records)
    for t in ts:
        acc = cost = esc = 0.0
        for r in records:
            if r.agreement >= t - 1e-9:
                acc += r.cheap_correct
                cost += r.cheap_cost
            else:
                acc += r.strong_correct
                cost += r.cheap_cost + r.strong_cost
                esc += 1
        out.append({"threshold": round(t, 4), "accuracy": acc / n, "cost_usd": cost / n, "escalation_rate": esc / n})
    return out


def _rank(p: Mapping[str, float], target: float) -> tuple[float, float, float]:
    """How good a point is: reaching ``target`` first, then cheaper (then more accurate); short of
    it, more accurate (then cheaper). The one order ``fit_threshold`` chooses and compares by."""
    if p["accuracy"] >= target - 1e-12:
        return (1.0, -p["cost_usd"], p["accuracy"])
    return (0.0, p["accuracy"], -p["cost_usd"])


def _pick(pts: list[dict[str, float]], target_accuracy: float) -> dict[str, float]:
    return max(pts, key=lambda p: _rank(p, target_accuracy))


def fit_threshold(records: Sequence[CascadeRecord], target_accuracy: float, *, default: float = DEFAULT_THRESHOLD,
                  folds: int = 5, seed: int = 0) -> dict[str, float]:
    """The cheapest threshold whose accuracy reaches ``target_accuracy`` (else the most accurate),
    chosen on all ``records`` — unless the choice does worse on held-out rows than ``default``.

    With at least ``2 * folds`` records it reports what to expect on new traffic: ``cv_accuracy``,
    ``cv_cost_usd`` and ``cv_escalation_rate``, each fold scored at the threshold chosen on the other
    folds (never on the rows it was chosen on; the in-sample figures are optimistic, by how much these
    say). The default is not learnt, so its figures on all rows are already held-out ones; when they
    beat the cross-validated fit (``_rank``: the target met, then cost), the default is
    returned with ``kept_default = 1`` (``cv_fit_*`` keep what fitting scored), so a fit never makes the cascade worse than leaving it alone."""
    out = dict(_pick(sweep(records), target_accuracy))
    n = len(records)
    if folds < 2 or n < 2 * folds:
        return out
    order = list(range(n))
    random.Random(seed).shuffle(order)
    acc = cost = esc = 0.0
    for k in range(folds):
        held = set(order[k::folds])
        t = _pick(sweep([records[i] for i in range(n) if i not in held]), target_accuracy)["threshold"]
        p = sweep([records[i] for i in held], [t])[0]
        acc, cost, esc = acc + p["accuracy"] * len(held), cost + p["cost_usd"] * len(held), esc + p["escalation_rate"] * len(held)
    cv = {"accuracy": acc / n, "cost_usd": cost / n, "escalation_rate": esc / n}
    base = sweep(records, [default])[0]
    out.update(cv_accuracy=cv["accuracy"], cv_cost_usd=cv["cost_usd"], cv_escalation_rate=cv["escalation_rate"], cv_folds=float(folds),
               cv_fit_accuracy=cv["accuracy"], cv_fit_cost_usd=cv["cost_usd"], default_threshold=default, default_accuracy=base["accuracy"], default_cost_usd=base["cost_usd"], kept_default=0.0)
    if _rank(base, target_accuracy) > _rank(cv, target_accuracy):
        out.update(threshold=default, accuracy=base["accuracy"], cost_usd=base["cost_usd"], escalation_rate=base["escalation_rate"],
                   cv_accuracy=base["accuracy"], cv_cost_usd=base["cost_usd"], cv_escalation_rate=base["escalation_rate"], kept_default=1.0)
    return out
