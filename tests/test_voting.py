"""Voting: extraction, pure tallies, tie policies, exact early stopping, judge, escalation."""

from __future__ import annotations

import json

import pytest

from turnout import ConfigError, Request
from turnout.errors import ProviderUnavailable
from turnout.parallel import (
    SAMPLE_TEMPERATURE,
    Vote,
    VotePrior,
    beta_confidence,
    extract_json_field,
    extract_label,
    extract_number,
    extract_regex,
    extract_text,
    fit_prior,
    is_decided,
    keep_probability,
    panel,
    sampler,
    tally,
    threshold,
    vote,
)
from turnout.testing import ScriptedModel


def votes(*keys, sources=None):
    return [Vote(k, str(k), (sources or [""] * len(keys))[i], 1.0, i) for i, k in enumerate(keys)]


@pytest.mark.parametrize("text", ["42", "42.0", "The answer is 42.", "12 + 30 = 42", "4.2e1", "**42**"])
def test_numbers_normalise_to_one_vote(text):
    assert extract_number(text) == "42"


def test_other_extractors():
    assert extract_number("1,250 apples") == "1250" and extract_number("no digits") is None
    assert extract_text("  Paris. ") == "paris"
    lab = extract_label(["billing", "technical_support"], synonyms={"tech": "technical_support"})
    assert lab("Billing") == "billing" and lab("I think it's technical support.") == "technical_support"
    assert lab("tech") == "technical_support" and lab("billing or technical support") is None and lab("sales") is None
    assert extract_json_field("answer.value")('Sure: {"answer": {"value": 42.0}}') == "42"
    assert extract_json_field("ok")('{"ok": true}') == "true" and extract_json_field("x")("not json") is None
    assert extract_regex(r"answer:\s*(\w+)")("The ANSWER: Yes!") == "yes"


def test_plurality_majority_unanimity_threshold():
    v = votes("a", "a", "b", "c", None)
    p = tally(v)
    assert (p.answer, p.outcome, p.abstained) == ("a", "decided", 1) and p.agreement == pytest.approx(0.5)
    assert tally(v, rule="majority").outcome == "no_decision"  # 2 of 4 valid votes is not > 50%
    assert tally(votes("a", "a", "b"), rule="majority").answer == "a"
    assert tally(votes("a", "a", "a"), rule="unanimity").answer == "a"
    assert tally(votes("a", "a", "b"), rule="unanimity").answer is None
    assert tally(votes("a", "a", "b"), rule=threshold(0.6)).answer == "a"
    assert tally(votes("a", "a", "b", "b", "c"), rule=threshold(0.6)).answer is None
    assert tally(votes(None, None)).outcome == "no_votes"


def test_weighted_votes():
    v = votes("a", "b", "b", sources=["strong", "weak", "weak"])
    assert tally(v).answer == "b"
    assert tally(v, weights={"strong": 3.0, "weak": 1.0}).answer == "a"


@pytest.mark.parametrize(
    ("policy", "answer", "outcome"),
    [("escalate", None, "tie"), ("first_seen", "b", "decided"), ("weight_order", "a", "decided"), ("judge", None, "tie")],
)
def test_tie_policies(policy, answer, outcome):
    v = votes("b", "a", sources=["small", "big"])
    t = tally(v, tie=policy, weights={"big": 1.0, "small": 1.0}, source_order=["big", "small"])
    assert (t.answer, t.outcome) == (answer, outcome) and t.tied == ["b", "a"]


def test_decided_rule_is_exact():
    # 8 planned: after 4 unanimous votes the other 4 could still tie; after 5 they cannot
    assert not is_decided(votes("a", "a", "a", "a"), 8)
    assert is_decided(votes("a", "a", "a", "a", "a"), 8)
    assert not is_decided(votes("a", "b", "a", "a", "a", "b"), 8)  # 4-2 with 2 left: could tie
    assert is_decided(votes("a", "b", "a", "a", "a", "b", "a"), 8)


def test_beta_rule():
    assert beta_confidence(3, 0) == pytest.approx(15 / 16) and beta_confidence(4, 0) == pytest.approx(31 / 32)
    assert not is_decided(votes("a", "a", "a"), 8, mode="beta", level=0.95)
    assert is_decided(votes("a", "a", "a", "a"), 8, mode="beta", level=0.95)


def _keep_by_integration(lead, others, second, remaining, steps=20000):
    """The same probability by numerical integration over the leader's share p (an independent check)."""
    from math import comb

    total = 0.0
    for i in range(steps):
        p = (i + 0.5) / steps
        density = p**lead * (1 - p) ** others
        win = sum(comb(remaining, k) * p**k * (1 - p) ** (remaining - k)
                  for k in range(remaining + 1) if lead + k > second + remaining - k)
        total += density * win
    norm = sum(((i + 0.5) / steps) ** lead * (1 - (i + 0.5) / steps) ** others for i in range(steps))
    return total / norm


@pytest.mark.parametrize(("keys", "planned"), [("aaa", 8), ("aa", 8), ("aaab", 8), ("aaaab", 8), ("aab", 6), ("aaa", 40)])
def test_keep_probability_matches_integration(keys, planned):
    v = votes(*keys)
    lead = max(keys.count(k) for k in set(keys))
    second = sorted((keys.count(k) for k in set(keys)), reverse=True)[1] if len(set(keys)) > 1 else 0
    expected = _keep_by_integration(lead, len(keys) - lead, second, planned - len(keys))
    assert keep_probability(v, planned) == pytest.approx(expected, abs=1e-4)


def test_predictive_rule_knows_how_many_votes_are_left():
    # 3 of 3 with 5 left: P(the 8-vote winner changes or ties) = 4%; with 2 of 2 it is 12%
    assert is_decided(votes("a", "a", "a"), 8, mode="predictive", level=0.95)
    assert not is_decided(votes("a", "a"), 8, mode="predictive", level=0.95)
    assert not is_decided(votes("a", "a", "a"), 40, mode="predictive", level=0.95)  # 37 left: not yet
    assert not is_decided(votes("a", "b"), 8, mode="predictive", level=0.5)  # a tie is never decided
    assert not is_decided(votes("a", "a", "b", "b", "a"), 8, mode="predictive", level=0.95)
    assert is_decided(votes("a", "b", "a", "a", "a", "b", "a"), 8, mode="predictive", level=0.999)  # exact wins
    assert keep_probability(votes(None, None), 8) == 0.0
    # unanimity: a split vote can stop at once (it has failed); otherwise all the rest must agree
    assert is_decided(votes("a", "b"), 8, rule="unanimity", mode="predictive")
    assert keep_probability(votes("a", "a", "a"), 5, rule="unanimity") == pytest.approx(4 / 6)


def test_predictive_rule_agrees_with_the_full_vote_as_often_as_it_promises():
    """Simulated voters (a random true share per question, the rest split over two wrong answers):
    the early answer differs from the full 8-vote winner at most 1 - level of the time."""
    import random

    rng = random.Random(3)
    level, planned, trials = 0.95, 8, 3000
    changed = used = 0
    for _ in range(trials):
        p = rng.random()
        seq = votes(*("a" if rng.random() < p else rng.choice("bc") for _ in range(planned)))
        k = next(j for j in range(2, planned + 1) if is_decided(seq[:j], planned, mode="predictive", level=level))
        used += k
        early, full = tally(seq[:k], tie="first_seen"), tally(seq, tie="first_seen")
        changed += early.answer != full.answer
    assert changed / trials <= 1 - level
    assert used / trials < 0.75 * planned  # and it does stop early


async def test_adaptive_voting_stops_exactly_when_decided():
    m = ScriptedModel(default="The answer is 7.")
    v = await vote(sampler(m, Request.of("3 + 4?")), 8, extract=extract_number, wave=1)
    assert v.answer == "7" and m.calls == 5 and v.samples_used == 5 and v.samples_saved == 3
    assert "stopped early" in v.reason and v.agreement == 1.0


def _simulated(n_questions, share, answers="bc", planned=8, seed=1):
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n_questions):
        p = share(rng)
        out.append(["a" if rng.random() < p else rng.choice(answers) for _ in range(planned)])
    return out


def test_fit_prior_recovers_the_uninformed_prior_and_a_self_consistent_model():
    # two answers, a uniform share: the answer of a random vote has share ~ Beta(2, 1), the default
    p = fit_prior(_simulated(3000, lambda r: r.random(), answers="b"))
    assert p.alpha == pytest.approx(2.0, rel=0.15) and p.beta == pytest.approx(1.0, rel=0.15) and p.fitted_on == 3000
    assert VotePrior().alpha == 2.0 and VotePrior().beta == 1.0
    # a model that mostly agrees with itself: a high mean share, and two agreeing votes of 8 now suffice
    consistent = fit_prior(_simulated(400, lambda r: r.betavariate(20, 1)))
    assert consistent.mean > 0.85
    two = votes("a", "a")
    assert keep_probability(two, 8) < 0.9 < 0.95 < keep_probability(two, 8, prior=consistent)
    # counts mappings (what the store keeps) give the same fit as the vote lists
    lists = _simulated(200, lambda r: r.betavariate(3, 1))
    as_counts = [{k: float(v.count(k)) for k in set(v)} for v in lists]
    assert fit_prior(as_counts) == fit_prior(lists)
    with pytest.raises(ConfigError, match="at least 10"):
        fit_prior([["a", "a"]] * 3)


def test_a_fitted_prior_keeps_its_promise_on_held_out_questions():
    """Fit on one set of simulated questions, stop on another: the early answer still matches the
    full vote at least ``level`` of the time, with far fewer samples than the uninformed rule."""
    share = lambda r: r.betavariate(20, 1)  # noqa: E731  # a model that mostly agrees with itself
    prior = fit_prior(_simulated(300, share, seed=2))
    held_out = _simulated(2000, share, seed=3)

    def run(pr):
        changed = used = 0
        for keys in held_out:
            seq = votes(*keys)
            k = next(j for j in range(2, 9) if is_decided(seq[:j], 8, mode="predictive", level=0.95, prior=pr))
            used += k
            changed += tally(seq[:k], tie="first_seen").answer != tally(seq, tie="first_seen").answer
        return changed / len(held_out), used / len(held_out)

    changed_fit, used_fit = run(prior)
    changed_uniform, used_uniform = run(None)
    assert changed_fit <= 0.05 and changed_uniform <= 0.05
    assert used_fit < used_uniform - 0.5  # about 2.3 samples of 8 instead of 3.3


async def test_vote_uses_the_prior_and_the_store_fits_it(tmp_path):
    from turnout.store import SQLiteStore

    m = ScriptedModel(default="7")
    v = await vote(sampler(m, Request.of("q")), 8, extract=extract_number, wave=1, early_stop="predictive",
                   prior=VotePrior(0.4, 0.1))
    assert v.answer == "7" and m.calls == 2
    with SQLiteStore(tmp_path / "v.db") as store:
        for keys in _simulated(30, lambda r: r.betavariate(20, 1)):
            store.record_verdict(tally(votes(*keys)), name="arith")
        store.record_verdict(tally(votes("x", "y", "z")), name="other")
        store.flush()
        fitted = VotePrior.from_store(store, name="arith")
    assert fitted.fitted_on == 30 and fitted.mean > 0.85


async def test_predictive_voting_stops_after_three_agreeing_samples_of_eight():
    m = ScriptedModel(default="The answer is 7.")
    v = await vote(sampler(m, Request.of("3 + 4?")), 8, extract=extract_number, wave=1, early_stop="predictive")
    assert v.answer == "7" and m.calls == 3 and v.samples_used == 3
    with pytest.raises(ConfigError, match="early_stop"):
        await vote(sampler(m, Request.of("q")), 8, early_stop="sometimes")


async def test_fixed_n_without_early_stop_uses_all_samples():
    m = ScriptedModel(default="7")
    v = await vote(sampler(m, Request.of("q")), 8, extract=extract_number, early_stop=None, wave=4)
    assert m.calls == 8 and v.samples_used == 8 and v.answer == "7"


async def test_split_votes_run_to_the_end_and_seeds_differ():
    m = ScriptedModel(queue=["1", "2"] * 4)
    v = await vote(sampler(m, Request.of("q")), 8, extract=extract_number, wave=2)
    assert m.calls == 8 and v.outcome == "tie"
    assert len({r.seed for r in m.history}) == 8 and all(r.temperature == SAMPLE_TEMPERATURE for r in m.history)


async def test_unparseable_and_failed_samples_are_reported():
    m = ScriptedModel(queue=["I don't know", ProviderUnavailable("down"), "5", "5", "5"])
    v = await vote(sampler(m, Request.of("q")), 5, extract=extract_number, wave=1, early_stop=None)
    assert v.answer == "5" and v.abstained == 1 and "1 samples failed" in v.reason


async def test_judge_settles_a_tie_and_invalid_choices_escalate():
    m = ScriptedModel(queue=["12", "13"])
    judge = ScriptedModel(default=json.dumps({"choice": 1}))
    v = await vote(sampler(m, Request.of("q")), 2, extract=extract_number, tie="judge", judge=judge, question="5+8?")
    assert v.answer == "13" and v.outcome == "judged" and "Candidate answers" in judge.history[0].messages[-1].content
    bad = ScriptedModel(default=json.dumps({"choice": 9}))
    m2 = ScriptedModel(queue=["12", "13"])
    v2 = await vote(sampler(m2, Request.of("q")), 2, extract=extract_number, tie="judge", judge=bad)
    assert v2.answer is None and v2.outcome == "escalated" and "invalid choice" in v2.reason
    with pytest.raises(ConfigError):
        await vote(sampler(m, Request.of("q")), 2, tie="judge")


async def test_low_agreement_triggers_the_escalation_hook():
    m = ScriptedModel(queue=["1", "2", "3", "1"])
    strong = ScriptedModel(default="1")
    called = []

    async def escalate(v):
        called.append(v.agreement)
        c = await strong.complete(Request.of("q"))
        return tally([Vote(extract_number(c.text), c.text, "strong")])

    v = await vote(sampler(m, Request.of("q")), 4, extract=extract_number, early_stop=None, escalate_below=0.75, on_escalate=escalate)
    assert called == [0.5] and v.answer == "1" and v.outcome == "escalated" and strong.calls == 1


async def test_panel_of_models_with_weights():
    a, b, c = ScriptedModel(default="x", name="a"), ScriptedModel(default="y", name="b"), ScriptedModel(default="y", name="c")
    sample, sources = panel([(a, Request.of("q")), (b, Request.of("q")), (c, Request.of("q"))])
    v = await vote(sample, 3, sources=sources, early_stop=None, wave=3, weights={"a": 5.0})
    assert v.answer == "x" and sources == ["a", "b", "c"]


async def test_a_verdict_is_frozen_and_the_steps_after_the_tally_return_new_ones():
    import dataclasses

    from turnout.parallel.voting import escalate, low_agreement

    v = tally([Vote("a", "a", "", 1.0, 0), Vote("b", "b", "", 1.0, 1), Vote("a", "a", "", 1.0, 2)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.answer = "b"  # type: ignore[misc]
    assert low_agreement(v, 0.9) and not low_agreement(v, 0.6)
    seen = []

    async def handler(x):
        seen.append(x)
        return None  # keep it, marked escalated

    e = await escalate(v, 0.9, handler)
    assert e is not v and e.outcome == "escalated" and v.outcome == "decided" and "below 90%" in e.reason
    assert [x.reason for x in seen] == [e.reason]  # the handler saw why
    assert await escalate(v, 0.5, handler) is v  # agreement high enough: not escalated
