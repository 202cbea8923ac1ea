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
    long = "ordinary words before it, long enough for the gated path " * 2  # past _GATED_FROM
    for text in (shape, f"the config says {shape} so use it", f"{shape}\nnext line", f"«{shape}» in non-ASCII text",
                 f"{long}{shape}", f"{shape} {long}"):
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


# -- gates: the cheap pre-checks before each regex never change what is found ------------------
FINDABLE = [
    "4111 1111 1111 1111", "5500005555555559", "GB82 WEST 1234 5698 7654 32", "DE89370400440532013000",
    "jane.doe@example.co.uk", "+44 20 7946 0958", "(212) 555-0199", "212.555.0199", "020 7946 0958", "123-45-6789",
    "AB 12 34 56 C", "ZZ 12 34 56 C", "BG123456A", "TN 12 34 56 D", "GB82WEST12345698765432", "4111 1111 1111 111", "4111 1111 1117", "012 345 678", "+12 345 678", "+1 800 5", "12-34-5678", "0123 45", *SHAPES,
]


def _corpus() -> list[str]:
    out = []
    for s in FINDABLE:
        out += [s, f"see {s}.", f"{'filler words ' * 5}{s}", f"{s}{s}", f"x{s}y", s.lower(), s.upper(), f"«{s}»", f"١٢٣ {s}", s.replace(" ", "")]
    return out + [" ".join(FINDABLE), "".join(FINDABLE)]


def test_detector_gates_never_change_a_finding() -> None:
    from dataclasses import replace

    from turnout.policies import Detector

    gated = Detector()
    ungated = Detector()
    ungated.patterns = tuple(replace(p, gate=None) for p in ungated.patterns)
    assert any(p.gate is not None for p in gated.patterns)
    found = 0
    for text in _corpus():
        want = ungated.scan(text)
        assert gated.scan(text) == want, text
        found += bool(want)
    assert found > len(FINDABLE) * 5  # the corpus is mostly findable text, so the comparison means something


def test_scrub_gates_never_change_the_scrubbed_text() -> None:
    from turnout import _secrets

    for text in _corpus():
        assert scrub(text) == _secrets._SHAPED.sub("[SECRET]", _secrets._registered.sub("***", text)
                                                   if _secrets._registered else text), text


def test_number_patterns_find_what_their_plain_forms_find() -> None:
    """The Detector's number and ID patterns are written to start with a digit, ``+``, ``0`` or a
    capital (fast in sre); their plain forms (the boundary checked first) are the specification."""
    import random
    import re

    from turnout.policies import Detector

    plain = {
        "card": r"(?<![\d-])(?:\d[ -]?){11,18}\d(?![\d-])",
        "us ssn": r"\b\d{3}-\d{2}-\d{4}\b",
        "international phone": r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\w)",
        "national phone": r"(?<![\w-])0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}(?![\w-])",
        "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
        "uk nino": r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
    }
    rng = random.Random(7)
    alphabet = "0123456789" * 3 + " -.()+_é٣" + "ABGKNTZDWQ" * 2 + "ab"
    texts = [*_corpus(), *("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(6000))]
    ours = {p.kind: p.regex for p in Detector().patterns}
    for kind, rx in plain.items():
        spec = re.compile(rx)
        assert ours[kind].pattern != rx  # the fast form is the one in use
        for t in texts:
            assert [m.span() for m in ours[kind].finditer(t)] == [m.span() for m in spec.finditer(t)], (kind, t)
