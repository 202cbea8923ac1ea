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
from typing import Any

__all__ = ["SECRET_PATTERNS", "clean", "describe", "register", "register_headers", "scrub", "scrub_logs", "scrub_row"]

# (kind, regex) of secret-shaped text; the compliance Detector's ``secret`` class is built from these
SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    ("private key", r"-----BEGIN (?:[A-Z ]+ )?PRIVATE KEY-----"),
    ("anthropic key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    ("openai key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    ("aws access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("slack token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ("google api key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("credential assignment", r"(?i:\b(?:api[_-]?key|secret|token|password|passwd)\b\s*[:=]\s*['\"]?[^\s'\"]{8,})"),
)
# what scrub() also removes that the Detector does not classify: bearer tokens in echoed headers
_EXTRA = (r"(?i:\bbearer\s+[A-Za-z0-9._~+/=-]{8,})", r"(?i:\bx-api-key[\"']?\s*[:=]\s*[\"']?[^\s\"',}]{8,})")
_SHAPED = re.compile("|".join(f"(?:{rx})" for rx in [r for _, r in SECRET_PATTERNS] + list(_EXTRA)))
# Every shape above holds one of these literals, and a character (one of ``gate``) that a single
# memchr finds. ASCII text without them cannot match and is spared the regex: an alternation of ten
# ``\b``-anchored branches costs ~0.1 µs a character (0.8 ms for an 8 kB prompt), and the trace
# writer scrubs every prompt it stores, holding the GIL the event loop needs. ``fold``: the shape
# ignores case, so its literals are looked for in the lowercased text. (Non-ASCII text always gets
# the regex: under ``(?i)`` a character such as U+017F matches ``s``, which no literal check sees.)
_ANCHORS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("-", ("-----BEGIN", "sk-", "xox"), False),
    ("_", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), False),
    ("A", ("AKIA", "ASIA", "AIza"), False),
    (":=", ("api", "secret", "token", "passw"), True),  # credential assignments and x-api-key
    ("", ("bearer",), True),
)

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
    if not text.isascii():
        return True
    low = None
    for gate, literals, fold in _ANCHORS:
        if gate and not any(c in text for c in gate):
            continue
        if fold and low is None:
            low = text.lower()
        hay = low if fold else text
        if any(lit in hay for lit in literals):  # type: ignore[operator]
            return True
    return False


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
