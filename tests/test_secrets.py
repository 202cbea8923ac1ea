"""``scrub``: every secret shape is removed wherever it sits in the text, whatever its case where
the shape ignores case — including through the literal pre-check that spares ordinary text the
regex — and ordinary text comes back unchanged."""

from __future__ import annotations

import pytest

from turnout._secrets import clean, scrub, scrub_row

SHAPES = [
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----",
    "sk-ant-api03-" + "a1B2" * 6,
    "sk-" + "Z9y8X7w6" * 3,
    "sk-proj-" + "Qq_-" * 6,
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE",
    *(f"gh{c}_" + "a" * 36 for c in "pousr"),
    *(f"xox{c}-1234567890-abc" for c in "abprs"),
    "AIza" + "S" * 35,
    "api_key=abcdefgh12", "API-KEY: 'abcdefgh12'", "apikey = abcdefgh12", "Secret: hunter2hunter2",
    "TOKEN=abcdefgh12", "password='correcthorse'", "PassWd: correcthorse",
    "Bearer abc.def.ghi-123", "BEARER abcdefgh12345", "x-api-key: abcdefgh12", "X-Api-Key\": \"abcdefgh12",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_scrubbed_in_any_surroundings(shape: str) -> None:
    for text in (shape, f"the config says {shape} so use it", f"{shape}\nnext line", f"«{shape}» in non-ASCII text"):
        out = scrub(text)
        assert "[SECRET]" in out, (shape, text, out)
        assert shape not in out


def test_ordinary_text_is_unchanged() -> None:
    texts = ["hello gateway, please answer", "0123456789abcdef0123456789abcdef",
             "The quick brown fox thought it through, roughly. " * 40, "naïve café — déjà vu", "sk- is a prefix", "",
             "A well-known snake_case name: x = 1, and the bearer of news; an API; tokens"]
    for t in texts:
        assert scrub(t) == t
    assert scrub_row(("run", 1, None, texts[2])) == ("run", 1, None, texts[2])


def test_non_ascii_case_folding_still_caught() -> None:
    # under (?i), U+017F (long s) matches "s" and U+0131 (dotless i) matches "i": the regex sees
    # them; a literal pre-check on lowercased text would not, so non-ASCII text always gets the regex
    for text in ("pa\u017f\u017fword=correcthorse", "ap\u0131_key=abcdefgh12"):
        assert "[SECRET]" in scrub(text)


def test_clean_replaces_lone_surrogates() -> None:
    assert clean("a\ud800b") == "a\ufffdb"
