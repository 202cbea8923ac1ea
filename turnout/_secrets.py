"""The one place text is cleaned of secrets before anyone can see it.

Two kinds of secret are removed:

- **registered values**: every API key an adapter resolves, every password in a store or Redis URL,
  every credential-looking header an adapter is given (``register``). They are replaced by ``***``
  wherever they appear, whatever surrounds them (a provider or proxy that echoes the request
  headers into its body, a URL in a driver's message, ...);
- **secret-shaped text** that nobody registered (a key pasted into a prompt): provider key formats,
  private-key blocks, ``Bearer`` tokens and ``password=``-style assignments become ``[SECRET]``.
  The compliance ``Detector`` uses the same patterns for its ``secret`` data class.

``scrub`` runs where error text is made (``TurnoutError`` scrubs its own message), where rows are
written (the trace store's writer, off the hot path), and at every edge that prints or serves an
error (``describe``). ``clean`` also makes text storable: lone UTF-16 surrogates (valid JSON, not
encodable as UTF-8) become U+FFFD.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["SECRET_PATTERNS", "Gate", "GateText", "clean", "describe", "register", "register_headers", "scrub", "scrub_logs", "scrub_row"]


class Gate(NamedTuple):
    r"""A cheap necessary condition of a pattern matching, checked before its regex runs: an
    alternation of ``\b``-anchored branches costs sre ~10 ns a character for each pattern (0.1 ms a
    pattern on an 8 kB prompt), one ``memchr`` for a character ~0.06 µs. ``chars``: one of these
    characters is in the text; ``literals``: one of these substrings is (looked for in the
    lowercased text if ``fold``, for a pattern that ignores case); ``digits``: at least that many
    ASCII digits. Only ASCII text is gated: under ``(?i)`` a character such as U+017F matches ``s``
    and ``\d`` matches every script's digits, which no literal check sees."""

    chars: str = ""
    literals: tuple[str, ...] = ()
    fold: bool = False
    digits: int = 0

    def open(self, text: GateText) -> bool:
        if not text.ascii:
            return True
        t = text.text
        if self.chars and not any(c in t for c in self.chars):
            return False
        if self.literals:
            hay = text.lower() if self.fold else t
            if not any(lit in hay for lit in self.literals):
                return False
        return not self.digits or text.digits() >= self.digits


class GateText:
    """A text being gated, with what the gates ask of it computed once (its lowercase, its digits)."""

    __slots__ = ("_digits", "_low", "ascii", "text")

    def __init__(self, text: str) -> None:
        self.text, self.ascii = text, text.isascii()
        self._low: str | None = None
        self._digits: int | None = None

    def lower(self) -> str:
        if self._low is None:
            self._low = self.text.lower()
        return self._low

    def digits(self) -> int:
        if self._digits is None:
            t = self.text
            self._digits = 0 if not any(d in t for d in "0123456789") else len(t) - len(t.encode().translate(None, b"0123456789"))
        return self._digits


_CRED = Gate(":=", ("api", "secret", "token", "passw"), fold=True)
# (kind, regex, gate) of secret-shaped text; the compliance Detector's ``secret`` class is built from these
SECRET_PATTERNS: tuple[tuple[str, str, Gate], ...] = (
    ("private key", r"-----BEGIN (?:[A-Z ]+ )?PRIVATE KEY-----", Gate("-", ("-----BEGIN",))),
    ("anthropic key", r"\bsk-ant-[A-Za-z0-9_-]{20,}", Gate("-", ("sk-ant-",))),
    ("openai key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}", Gate("-", ("sk-",))),
    ("aws access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", Gate("A", ("AKIA", "ASIA"))),
    ("github token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b", Gate("_", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"))),
    ("slack token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}", Gate("-", ("xox",))),
    ("google api key", r"\bAIza[0-9A-Za-z_-]{35}\b", Gate("A", ("AIza",))),
    ("credential assignment", r"(?i:\b(?:api[_-]?key|secret|token|password|passwd)\b\s*[:=]\s*['\"]?[^\s'\"]{8,})", _CRED),
)
# what scrub() also removes that the Detector does not classify: bearer tokens in echoed headers
_EXTRA = ((r"(?i:\bbearer\s+[A-Za-z0-9._~+/=-]{8,})", Gate("", ("bearer",), fold=True)),
          (r"(?i:\bx-api-key[\"']?\s*[:=]\s*[\"']?[^\s\"',}]{8,})", _CRED))
_SHAPES = [(rx, gate) for _, rx, gate in SECRET_PATTERNS] + list(_EXTRA)
_SHAPED = re.compile("|".join(f"(?:{rx})" for rx, _ in _SHAPES))
_GATES = tuple(dict.fromkeys(g for _, g in _SHAPES))  # ASCII text no gate opens for cannot match: spared the regex
_GATED_FROM = 48  # characters: below, the regex runs at once (both cost ~5 µs at ~45 characters that open most gates)

_SURROGATE = re.compile("[\ud800-\udfff]")
_MIN_LEN = 6  # shorter values would scrub ordinary words
_lock = threading.Lock()
_values: set[str] = set()
_registered: re.Pattern[str] | None = None
_HEADER_WORDS = ("authorization", "key", "token", "secret", "password", "cookie")


def register(*values: str | None) -> None:
    """Remember secret values for ``scrub`` (process-wide; short or empty values are ignored)."""
    global _registered
    new = {v for v in values if isinstance(v, str) and len(v) >= _MIN_LEN} - _values
    if not new:
        return
    with _lock:
        _values.update(new)
        # longest first, so a key that contains another registered value is removed whole
        _registered = re.compile("|".join(re.escape(v) for v in sorted(_values, key=len, reverse=True)))


def register_headers(headers: dict[str, str] | None) -> None:
    """Register the values of credential-looking headers (``Authorization``, ``x-api-key``, ...)."""
    for k, v in (headers or {}).items():
        if any(w in k.lower() for w in _HEADER_WORDS):
            register(v, v.split(" ", 1)[-1] if " " in v else None)


def scrub(text: str) -> str:
    """``text`` without any registered secret (``***``) or secret-shaped token (``[SECRET]``)."""
    if not text:
        return text
    rx = _registered
    if rx is not None:
        text = rx.sub("***", text)
    return _SHAPED.sub("[SECRET]", text) if _may_be_shaped(text) else text


def _may_be_shaped(text: str) -> bool:
    if len(text) < _GATED_FROM:
        return True  # on short text the regex costs less than asking the gates
    t = GateText(text)
    return any(g.open(t) for g in _GATES)


def clean(text: str) -> str:
    """``scrub`` plus lone surrogates replaced, so the text can always be encoded and stored."""
    text = scrub(text)
    return _SURROGATE.sub("\ufffd", text) if not text.isascii() and _SURROGATE.search(text) else text


def scrub_row(row: Iterable[Any]) -> tuple[Any, ...]:
    """A row to store: every string ``clean``ed, other values unchanged. (A short ASCII string — a
    status, a kind — is kept as it is: no registered value is shorter than ``_MIN_LEN`` and no
    secret shape is either, and ASCII has no surrogates.)"""
    return tuple(clean(v) if isinstance(v, str) and (len(v) >= _MIN_LEN or not v.isascii()) else v for v in row)


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, scrubbed — what edges print, store and serve."""
    msg = scrub(str(exc))
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def scrub_logs() -> None:
    """Make every log record of this process scrubbed (message, arguments and traceback), whatever
    logger or handler writes it. Called by the process's edges (the ``turnout`` CLI and ``turnout
    serve``), never at import: a library does not own the process's logging."""
    import logging
    import traceback

    old = logging.getLogRecordFactory()
    if getattr(old, "_turnout_scrubs", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        rec = old(*args, **kwargs)
        try:
            rec.msg, rec.args = scrub(rec.getMessage()), ()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is left to logging's own handling
            return rec
        if rec.exc_info and rec.exc_info[1] is not None:
            rec.exc_text = scrub("".join(traceback.format_exception(*rec.exc_info)).rstrip("\n"))
        return rec

    factory._turnout_scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
