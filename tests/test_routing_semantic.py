"""SemanticRouter with the deterministic FakeEmbedder: scoring, thresholds, batching, cache, fit."""

from __future__ import annotations

import pytest

from turnout import ConfigError
from turnout.routing import EmbeddingCache, Route, SemanticRouter
from turnout.testing import FakeEmbedder

ROUTES = [
    Route("billing", utterances=("I was charged twice on my invoice", "my card payment failed", "send me my invoice")),
    Route("technical", utterances=("the app crashes on startup", "I get an error when uploading", "login does not work")),
    Route("sales", utterances=("how much does the team plan cost", "can I get a demo", "do you offer discounts")),
    Route("general"),
]

LABELLED = [
    ("charged twice on my invoice again", "billing"), ("invoice payment failed", "billing"),
    ("the app crashes when uploading", "technical"), ("error on login", "technical"),
    ("what does the team plan cost", "sales"), ("demo and discounts please", "sales"),
    ("the weather is nice today", "general"), ("who won the football game", "general"),
]


def router(**kw):
    return SemanticRouter(ROUTES, FakeEmbedder(), fallback="general", **kw)


async def test_routes_by_similarity():
    r = router()
    for text, label in LABELLED[:6]:
        d = await r.decide(text)
        assert d.route == label, (text, d)
        assert d.kind == "semantic" and 0 < d.confidence <= 1 and set(d.scores) == {"billing", "technical", "sales"}


@pytest.mark.parametrize("scoring", ["centroid", "nearest", "hybrid", "probe"])
async def test_each_scoring_routes(scoring):
    d = await router(scoring=scoring).decide("the app crashes on startup")
    assert d.route == "technical"


async def test_threshold_abstains_to_fallback():
    r = router(default_threshold=0.99)
    d = await r.decide("charged twice on my invoice again")
    assert d.route == "general" and d.outcome == "fallback" and d.chosen is None and "threshold" in d.reason


async def test_empty_input_abstains_without_embedding():
    emb = FakeEmbedder()
    r = SemanticRouter(ROUTES, emb, fallback="general")
    await r.prepare()
    calls = emb.calls
    d = await r.decide("   ")
    assert d.route == "general" and "empty" in d.reason and emb.calls == calls


async def test_batch_uses_one_embedding_call():
    emb = FakeEmbedder()
    r = SemanticRouter(ROUTES, emb, fallback="general")
    await r.prepare()
    before = emb.calls
    ds = await r.decide_many([t for t, _ in LABELLED] + [""])
    assert emb.calls == before + 1
    assert [d.route for d in ds[:6]] == [y for _, y in LABELLED[:6]] and ds[-1].route == "general"


async def test_utterances_are_embedded_once_and_shared_by_content_hash():
    emb, cache = FakeEmbedder(), EmbeddingCache()
    await SemanticRouter(ROUTES, emb, fallback="general", cache=cache).prepare()
    texts = emb.texts
    await SemanticRouter(ROUTES, emb, fallback="general", cache=cache).prepare()  # same utterances
    assert emb.texts == texts and len(cache) == 9


def test_route_without_utterances_is_an_error_unless_fallback():
    with pytest.raises(ConfigError, match="route 'general' has no utterances"):
        SemanticRouter(ROUTES, FakeEmbedder())  # general is not the fallback here
    with pytest.raises(ConfigError, match="scoring must be one of"):
        SemanticRouter(ROUTES, FakeEmbedder(), fallback="general", scoring="magic")  # type: ignore[arg-type]


async def test_fit_repairs_a_mis_set_threshold():
    r = router(default_threshold=0.98)  # deliberately far too strict: everything falls back
    before = sum(d.route == y for d, (_, y) in zip(await r.decide_many([t for t, _ in LABELLED]), LABELLED, strict=True))
    rep = await r.fit(LABELLED)  # the rows are not the router's examples: scored by the whole index
    after = sum(d.route == y for d, (_, y) in zip(await r.decide_many([t for t, _ in LABELLED]), LABELLED, strict=True))
    assert rep.before["accuracy"] < rep.after["accuracy"]
    assert after > before and after == len(LABELLED)
    assert all(t < 0.98 for t in rep.thresholds.values())
    assert rep.temperature > 0 and "no row is one of the router's examples" in rep.validation


async def test_fit_for_precision_sets_a_confidence_cut_meeting_the_target_held_out():
    r = router()
    rep = await r.fit(LABELLED, objective="precision", target_precision=1.0)
    assert rep.objective == "precision" and rep.confidence_cut is not None and r.escalate_below == rep.confidence_cut
    ds = await r.decide_many([t for t, _ in LABELLED])
    answered = [(d, y) for d, (_, y) in zip(ds, LABELLED, strict=True) if d.outcome == "matched"]
    assert answered and all(d.route == y for d, y in answered)
    assert rep.expected_abstain_rate == pytest.approx(1 - sum(d.outcome == "matched" for d in ds if d.chosen) / 6, abs=0.01)


def test_a_shortlist_is_the_fewest_routes_holding_the_right_one_for_the_target_share():
    import numpy as np

    from turnout.routing.fitting import shortlist_size

    ranks = [1] * 20 + [2] * 6 + [3] * 3 + [5]  # of the right route, among 6, for 30 rows under the cut
    held = np.tile(np.linspace(0.9, 0.4, 6), (len(ranks) + 5, 1))  # route j ranks j + 1 on every row
    y = np.array([rk - 1 for rk in ranks] + [0] * 4 + [-1])  # 4 more rows above the cut, one unlabelled
    below = np.array([True] * len(ranks) + [False] * 4 + [True])
    assert shortlist_size(held, y, below, 0.95) == {"k": 3, "coverage": round(29 / 30, 4), "rows": 30, "scope": "under the cut"}
    assert shortlist_size(held, y, below, 1.0)["k"] == 5
    assert shortlist_size(held, y, below, 0.6)["k"] == 1
    few = shortlist_size(held, y, below, 0.95, min_rows=31)  # too few rows under the cut: every labelled row counts
    assert few["scope"] == "all labelled rows" and few["rows"] == 34
    assert shortlist_size(held, np.full(len(y), -1), below, 0.9) is None


async def test_fit_sizes_a_later_stages_shortlist_on_held_out_ranks():
    """Fitted on the router's own examples, where in sample the right route always ranks first: the
    shortlist comes from the held-out ranks, and is the least k reaching the target under the cut."""
    import numpy as np

    from turnout.routing.fitting import HeldOut, candidates

    rows = [(u, rt.name) for rt in ROUTES for u in rt.utterances]
    r = router()
    rep = await r.fit(rows, objective="precision", target_precision=0.9)
    s = rep.shortlist
    assert s is not None and s["rows"] == len(rows) and s["scope"] == "all labelled rows"  # 9 rows: under min_rows
    texts = [t for t, _ in rows]
    q = await r.cache.get_many(r.embedder, texts)
    chosen = next(c for c in candidates(r) if c.label == rep.scoring)
    held = HeldOut(r, q, texts, await r.description_vectors()).scores(chosen)
    names = list(r._names)
    y = np.array([names.index(lab) for _, lab in rows])
    rank = (held > held[np.arange(len(y)), y][:, None]).sum(axis=1) + 1
    cover = [float((rank <= k).mean()) for k in range(1, held.shape[1] + 1)]
    assert cover[s["k"] - 1] >= 0.9 and (s["k"] == 1 or cover[s["k"] - 2] < 0.9)
    assert s["k"] > 1  # held out, not in sample: in sample every example is its own best match (k = 1)


async def test_held_out_scores_are_those_of_a_router_without_the_row():
    """Leave-one-out is exact: a training row that is one of the examples is scored as the router
    built without that example scores it (centroid and nearest), never against itself."""
    from turnout.routing.fitting import Candidate, HeldOut

    r = router()
    await r.prepare()
    texts = [u for rt in ROUTES for u in rt.utterances]
    q = await r.cache.get_many(r.embedder, texts)
    h = HeldOut(r, q, texts, await r.description_vectors())
    for scoring in ("centroid", "nearest"):
        held = h.scores(Candidate(scoring))
        for i, t in enumerate(texts):
            without = [Route(rt.name, utterances=tuple(u for u in rt.utterances if u != t)) for rt in ROUTES]
            other = SemanticRouter(without, r.embedder, fallback="general", scoring=scoring)
            await other.prepare()
            assert held[i] == pytest.approx(other.score_matrix(q[i : i + 1])[0], abs=1e-5), (scoring, t)
    assert (h.scores(Candidate("nearest"), heldout=False).max(axis=1) > 0.999).all()  # in sample, each matches itself


async def test_fit_keeps_the_current_configuration_unless_another_is_better_beyond_noise():
    r = router(scoring="hybrid", hybrid_weight=0.75)
    examples = [(u, rt.name) for rt in ROUTES for u in rt.utterances]
    rep = await r.fit(examples)
    cur = rep.candidates[0]
    best = max(c["cv_accuracy"] for c in rep.candidates)
    chosen = next(c for c in rep.candidates if c["chosen"])
    assert rep.after["cv_accuracy"] >= rep.before["cv_accuracy"] and chosen["cv_accuracy"] >= cur["cv_accuracy"]
    assert chosen is cur or cur["cv_accuracy"] < best - 0.05  # replaced only when clearly worse
    assert all(c["train_accuracy"] == 1.0 for c in rep.candidates if c["candidate"] == "nearest")  # what the old fit chose on


async def test_probe_scoring_routes_and_is_retrained_the_same():
    a, b = router(scoring="probe"), router(scoring="probe")
    da, db = await a.decide("the app crashes on startup"), await b.decide("the app crashes on startup")
    assert da.route == "technical" and da.scores == db.scores


async def test_fit_rejects_unknown_labels():
    with pytest.raises(ConfigError, match="label 'nope' is not a route"):
        await router().fit([("x", "nope")])
