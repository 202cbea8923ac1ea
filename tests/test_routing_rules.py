"""RuleRouter: keywords (word boundary, any case), regexes, field predicates, priority, fallback."""

from __future__ import annotations

import pytest

from turnout import ConfigError
from turnout.routing import Route, RuleRouter

ROUTES = [
    Route("vip", fields=(("account_type", "in", ["enterprise", "vip"]),)),
    Route("billing", keywords=("invoice", "bill", "charged twice")),
    Route("technical", keywords=("crash", "error"), regexes=(r"\bE\d{2,}\b",)),
    Route("refund", regexes=(r"money\s+back",)),
    Route("general"),
]


@pytest.fixture
def router():
    return RuleRouter(ROUTES, fallback="general")


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("Where is my INVOICE?", "billing"),
        ("I was Charged Twice!", "billing"),
        ("the app shows error E42", "technical"),
        ("code E1234 appeared", "technical"),
        ("I want my money   back", "refund"),
    ],
)
async def test_rules_fire_case_insensitively(router, text, route):
    d = await router.decide(text)
    assert (d.route, d.confidence, d.outcome, d.kind) == (route, 1.0, "matched", "rule")
    assert d.reason and d.latency_s >= 0


async def test_keywords_respect_word_boundaries(router):
    d = await router.decide("That costs a billion dollars")  # "bill" must not fire inside "billion"
    assert d.route == "general" and d.outcome == "fallback" and d.chosen is None


async def test_field_predicates_and_priority(router):
    d = await router.decide({"text": "my invoice is wrong", "account_type": "enterprise"})
    assert d.route == "vip" and "account_type" in d.reason  # the field rule comes first
    d = await router.decide({"text": "my invoice is wrong", "account_type": "free"})
    assert d.route == "billing"


@pytest.mark.parametrize(
    ("op", "value", "fields", "fires"),
    [
        ("==", "billing", {"issue_type": "billing"}, True),
        ("!=", "billing", {"issue_type": "tech"}, True),
        (">", 100, {"amount": 250}, True),
        (">", 100, {"amount": "lots"}, False),  # wrong type: no fire, no crash
        ("contains", "urgent", {"tags": ["urgent", "vip"]}, True),
        ("not_in", ["a", "b"], {"tier": "c"}, True),
        ("==", "x", {}, False),  # field absent
    ],
)
async def test_field_operators(op, value, fields, fires):
    key = next(iter(fields), "issue_type")
    r = RuleRouter([Route("hit", fields=((key, op, value),)), Route("other")], fallback="other")
    d = await r.decide({"text": "", **fields})
    assert (d.route == "hit") is fires


async def test_abstains_without_fallback():
    d = await RuleRouter([Route("a", keywords=("x",))]).decide("nothing here")
    assert d.route is None and d.outcome == "abstained"


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="bad regex"):
        RuleRouter([Route("a", regexes=("(unclosed",))])
    with pytest.raises(ConfigError, match="unknown field operator"):
        RuleRouter([Route("a", fields=(("f", "~=", 1),))])
    with pytest.raises(ConfigError, match="duplicate route 'a'"):
        RuleRouter([Route("a"), Route("a")])
    with pytest.raises(ConfigError, match="fallback route 'nope'"):
        RuleRouter([Route("a")], fallback="nope")
    with pytest.raises(ConfigError, match="must be a list"):
        Route("a", keywords="invoice")  # type: ignore[arg-type]
