"""What a model's logged votes say about how often it agrees with itself: ``VotePrior`` (a Beta
prior on the share of the votes an answer gets) and its maximum-likelihood fit, ``fit_prior`` —
what the ``"predictive"`` early-stopping rule of ``vote`` uses (``voting.keep_probability``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError

if TYPE_CHECKING:
    from ..store.base import RunReader

__all__ = ["VotePrior", "beta_binomial", "fit_prior"]


def beta_binomial(k: int, n: int, a: float, b: float) -> float:
    """P(k successes in n draws) when the success rate is Beta(a, b)-distributed."""
    lg = math.lgamma
    return math.comb(n, k) * math.exp(lg(k + a) + lg(n - k + b) - lg(n + a + b) - lg(a) - lg(b) + lg(a + b))


@dataclass(frozen=True, slots=True)
class VotePrior:
    """What the ``"predictive"`` stopping rule expects of a model's self-agreement: a Beta(α, β) prior
    on the share of all votes that go to the answer of a vote drawn at random (the first one, say).

    The default (2, 1) is what "no idea" means — a uniform prior on any one answer's share, seen
    through the answer that was actually drawn — and it needs 3 agreeing votes of 8 before it
    stops. Fitted to a model's logged votes on a task (:func:`fit_prior`, :meth:`from_store`), it
    knows how often that model agrees with itself there and stops as early as that record justifies.
    """

    alpha: float = 2.0
    beta: float = 1.0
    fitted_on: int = 0  # how many votes it was fitted to (0: not fitted)

    @property
    def mean(self) -> float:
        """The expected share of the votes that the answer of a random vote gets."""
        return self.alpha / (self.alpha + self.beta)

    @staticmethod
    def from_store(store: RunReader, *, name: str | None = None, since: float | None = None) -> VotePrior:
        """Fit to the verdicts recorded in a trace store (optionally only those of vote ``name``)."""
        return fit_prior(v["counts"] for v in store.verdicts(name=name, since=since))


def fit_prior(tallies: Any, *, min_votes: int = 10) -> VotePrior:
    """Maximum-likelihood fit of :class:`VotePrior` to recorded votes.

    ``tallies``: per question, either the answer keys of its votes (``None`` = abstained) or a
    verdict's ``counts`` mapping. Each question with n ≥ 2 valid votes contributes, for each answer
    with c votes, weight c/n times log BetaBinomial(c − 1 of the other n − 1 | α, β) — the expected
    log-likelihood of "the other votes that agree with a random vote", since given the counts every
    vote is equally likely to have come first. That is only approximately true of votes stopped
    early (the order then matters a little); on the recorded benchmark votes, fits from the stopped
    and from the full votes gave P(keep after two agreeing votes of 8) 0.956 vs 0.961. Needs at
    least ``min_votes`` usable questions.
    """
    grouped: dict[tuple[int, int], float] = {}
    used = 0
    for t in tallies:
        if isinstance(t, Mapping):
            counts = [int(round(c)) for c in t.values() if c > 0]
        else:
            keys = [x for x in t if x is not None]
            counts = [keys.count(k) for k in dict.fromkeys(keys)]
        n = sum(counts)
        if n < 2:
            continue
        used += 1
        for c in counts:
            grouped[(c - 1, n - 1)] = grouped.get((c - 1, n - 1), 0.0) + c / n
    if used < min_votes:
        raise ConfigError(f"fit_prior needs at least {min_votes} recorded votes with 2 or more valid answers, got {used}")

    def loglik(a: float, b: float) -> float:
        return sum(w * math.log(max(beta_binomial(k, n, a, b), 1e-300)) for (k, n), w in grouped.items())

    # a coarse grid in log space, then two finer grids around the best point
    best = max((loglik(math.exp(x), math.exp(y)), x, y) for x in _frange(-3, 4, 0.25) for y in _frange(-3, 4, 0.25))
    for step in (0.05, 0.01):
        _, x0, y0 = best
        best = max((loglik(math.exp(x), math.exp(y)), x, y) for x in _frange(x0 - 5 * step, x0 + 5 * step, step)
                   for y in _frange(y0 - 5 * step, y0 + 5 * step, step))
    return VotePrior(round(math.exp(best[1]), 4), round(math.exp(best[2]), 4), used)


def _frange(lo: float, hi: float, step: float) -> list[float]:
    return [lo + i * step for i in range(int(round((hi - lo) / step)) + 1)]
