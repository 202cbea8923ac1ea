"""Compliance: find the sensitive data in a request, and send it only to models allowed to see it.

- ``Detector`` tags text with data classes: ``email``, ``phone``, ``card`` (payment card numbers that
  pass the Luhn check), ``iban`` (ISO 13616 mod-97 checksum), ``national_id`` (US SSN, UK National
  Insurance number), ``secret`` (API keys and tokens of the common providers, private-key blocks,
  ``password=``/``api_key=`` assignments), plus custom regex patterns. An allow-list drops known
  false positives (a literal string or a regex that the matched text fully matches).
- A model's catalog entry declares the data classes it may receive (``data_classes``, ``"*"`` = any)
  and its ``region``; a ``DataPolicy`` can restrict a class to regions (``card: [eu]``) and say
  which classes may be redacted when no model may receive them (the default is to refuse).
- ``Compliant`` wraps each adapter (innermost, below retries and fallback): it scans every request
  and raises ``DataClassNotAllowed`` rather than send a class the model may not see. A ``Fallback``
  skips such a member without cooling it down, and raises ``ComplianceError`` when no member may
  take the request — so fallbacks can never carry data across a compliance line.
- ``ComplianceGate`` wraps a model's whole chain: when no member may receive the request it either
  redacts the blocking classes (if the policy allows) or refuses with ``ComplianceError`` before any
  call is made.

Every send of sensitive data, every redaction and every refusal is an audit record — model, data
classes, action, and the sha256 of the text actually sent (never the text) — written to the active
run's store and to the ``turnout.audit`` logger. A request in which nothing was found leaves no row.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, NoReturn

from .._errors import ComplianceError, ConfigError, DataClassNotAllowed
from .._scope import active_run
from .._secrets import SECRET_PATTERNS, Gate, GateText
from .._types import Completion, Message, Request, StreamChunk
from ..models.base import ChatModel
from .base import Opened, Wrapper, drive, open_stream

__all__ = [
    "BUILTIN_CLASSES",
    "AuditRecord",
    "Compliant",
    "ComplianceGate",
    "DataPolicy",
    "Detector",
    "Finding",
    "iban_ok",
    "luhn_ok",
]

audit_log = logging.getLogger("turnout.audit")
log = logging.getLogger(__name__)

BUILTIN_CLASSES = ("email", "phone", "card", "iban", "national_id", "secret")
GROUPS: Mapping[str, tuple[str, ...]] = {
    "pii": ("email", "phone", "national_id"),
    "financial": ("card", "iban"),
}


# -- checksums ----------------------------------------------------------------------------------
def luhn_ok(digits: str) -> bool:
    """The Luhn check of a payment card number (digits only, 12–19 of them)."""
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_IBAN_LEN = {  # ISO 13616 lengths of the common countries; others: 15–34
    "AT": 20, "BE": 16, "CH": 21, "CZ": 24, "DE": 22, "DK": 18, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "IE": 22, "IT": 27,
    "LU": 20, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "SE": 24,
}


def iban_ok(iban: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces allowed)."""
    s = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    want = _IBAN_LEN.get(s[:2])
    if want is not None and len(s) != want:
        return False
    n = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(n) % 97 == 1


def _ssn_ok(s: str) -> bool:
    a, g, n = s[0:3], s[4:6], s[7:11]
    return a not in ("000", "666") and not a.startswith("9") and g != "00" and n != "0000"


# -- findings -------------------------------------------------------------------------------------
class Finding(NamedTuple):
    data_class: str
    start: int
    end: int
    kind: str  # the pattern that found it, e.g. "visa-like card", "openai key"

    def text(self, source: str) -> str:
        return source[self.start:self.end]


@dataclass(frozen=True, slots=True)
class _Pattern:
    data_class: str
    kind: str
    regex: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    gate: Gate | None = None  # a cheap necessary condition, checked before the regex (see Gate)


# Each gate: what any match of its pattern must contain. The number and ID patterns begin with what
# they match first (a digit, ``+``, ``0``, a capital) and check the character before it by a
# lookbehind after it, so sre jumps from candidate to candidate instead of trying every position
# (card: 4x faster on a ticket); tests/test_secrets.py holds their plain forms and checks that both
# find the same spans.
_BUILTIN: tuple[_Pattern, ...] = (
    *(_Pattern("secret", kind, re.compile(rx), gate=g) for kind, rx, g in SECRET_PATTERNS),  # one definition, shared with scrub()
    _Pattern("email", "email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
             gate=Gate("@")),
    _Pattern("iban", "iban", re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]){11,30}\b"), iban_ok, Gate(digits=2)),
    _Pattern("card", "card", re.compile(r"\d(?<![\d-]\d)(?:[ -]?\d){11,18}(?![\d-])"),
             lambda s: luhn_ok(re.sub(r"[ -]", "", s)), Gate(digits=12)),
    _Pattern("national_id", "us ssn", re.compile(r"\d(?<!\w\d)\d\d-\d{2}-\d{4}\b"), _ssn_ok, Gate("-", digits=9)),
    _Pattern("national_id", "uk nino", re.compile(r"[A-CEGHJ-PR-TW-Z](?<!\w[A-CEGHJ-PR-TW-Z])[A-CEGHJ-PR-TW-Z](?<!BG|GB|NK|KN|TN|NT|ZZ) ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),
             gate=Gate(digits=6)),
    _Pattern("phone", "international phone", re.compile(r"\+(?<![\w+]\+)\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\w)"),
             lambda s: 8 <= sum(c.isdigit() for c in s) <= 15, Gate("+", digits=8)),
    _Pattern("phone", "nanp phone", re.compile(r"(?<![\w-])(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])"),
             gate=Gate(digits=10)),
    _Pattern("phone", "national phone", re.compile(r"0(?<![\w-]0)\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}(?![\w-])"),
             gate=Gate("0", digits=9)),
)


class Detector:
    """Finds data classes in text. ``classes`` limits the built-in ones (default: all);
    ``custom`` adds ``{data_class: regex}``; ``allow`` drops findings whose text fully matches one
    of its entries (a literal, or a regex) — known false positives such as a support address."""

    def __init__(
        self,
        classes: Iterable[str] | None = None,
        *,
        custom: Mapping[str, str] | None = None,
        allow: Iterable[str] = (),
    ) -> None:
        wanted = set(classes) if classes is not None else set(BUILTIN_CLASSES)
        unknown = wanted - set(BUILTIN_CLASSES)
        if unknown:
            raise ConfigError(f"unknown built-in data class(es) {sorted(unknown)}; built in: {', '.join(BUILTIN_CLASSES)} "
                              "(add your own under custom:)")
        pats = [p for p in _BUILTIN if p.data_class in wanted]
        for name, rx in (custom or {}).items():
            try:
                pats.insert(0, _Pattern(name, f"custom {name}", re.compile(rx)))
            except re.error as e:
                raise ConfigError(f"custom data class {name!r}: bad regex {rx!r}: {e}") from None
        self.patterns: tuple[_Pattern, ...] = tuple(pats)
        self.data_classes = frozenset(p.data_class for p in pats)
        self._allow_literal = set()
        allow_rx = []
        for a in allow:
            self._allow_literal.add(a.strip())
            try:
                allow_rx.append(re.compile(a))
            except re.error:
                pass  # a literal that is not a valid regex: matched literally only
        self._allow_rx = tuple(allow_rx)

    def __repr__(self) -> str:
        return f"Detector({sorted(self.data_classes)})"

    def _allowed(self, s: str) -> bool:
        s = s.strip()
        return s in self._allow_literal or any(r.fullmatch(s) for r in self._allow_rx)

    def scan(self, text: str) -> list[Finding]:
        """Findings in ``text``, in order; a span claimed by an earlier pattern is not re-claimed."""
        out: list[Finding] = []
        taken: list[tuple[int, int]] = []
        gated = GateText(text)
        for p in self.patterns:
            if p.gate is not None and not p.gate.open(gated):
                continue  # no match possible: the regex is not run
            for m in p.regex.finditer(text):
                s, e = m.span()
                if any(s < te and ts < e for ts, te in taken):
                    continue
                hit = m.group(0)
                if p.check is not None and not p.check(hit):
                    continue
                taken.append((s, e))  # an allow-listed span is taken too: no shorter pattern re-finds part of it
                if self._allowed(hit):
                    log.debug("allow-listed %s finding ignored", p.data_class)
                    continue
                out.append(Finding(p.data_class, s, e, p.kind))
        out.sort(key=lambda f: f.start)
        return out

    def classes(self, request_or_text: Request | str) -> frozenset[str]:
        if isinstance(request_or_text, str):
            return frozenset(f.data_class for f in self.scan(request_or_text))
        found: set[str] = set()
        for m in request_or_text.messages:  # tool results are turns too; tool calls carry their arguments
            found.update(f.data_class for f in self.scan(m.content))
            for c in m.tool_calls:
                found.update(f.data_class for f in self.scan(c.arguments))
        return frozenset(found)

    def redact(self, text: str, classes: Iterable[str] | None = None) -> str:
        """``text`` with each finding (of ``classes``, default all) replaced by ``[CLASS]``."""
        keep = set(classes) if classes is not None else None
        parts, pos = [], 0
        for f in self.scan(text):
            if keep is not None and f.data_class not in keep:
                continue
            parts.append(text[pos:f.start])
            parts.append(f"[{f.data_class.upper()}]")
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts)

    def redact_request(self, request: Request, classes: Iterable[str] | None = None) -> Request:
        cl = list(classes) if classes is not None else None
        return request.with_(messages=tuple(self._redact_message(m, cl) for m in request.messages))

    def _redact_message(self, m: Message, classes: list[str] | None) -> Message:
        """The turn with its text and its tool calls' arguments redacted (the rest of the turn kept).
        A finding inside a JSON string becomes ``[CLASS]`` there, so the arguments stay JSON."""
        calls = tuple(c._replace(arguments=self.redact(c.arguments, classes)) for c in m.tool_calls)
        return m._replace(content=self.redact(m.content, classes), tool_calls=calls)


# -- the policy -------------------------------------------------------------------------------------
def expand(classes: Iterable[str]) -> frozenset[str]:
    """Data class names with groups (``pii``, ``financial``) expanded; ``*`` kept."""
    out: set[str] = set()
    for c in classes:
        out.update(GROUPS.get(c, (c,)))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class DataPolicy:
    """What may go where. ``regions`` restricts a data class to model regions; ``redact`` lists the
    classes that are redacted (rather than refused) when no candidate model may receive them."""

    detector: Detector = field(default_factory=Detector)
    regions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    redact: frozenset[str] = frozenset()

    def allows(self, model_classes: Iterable[str], region: str, classes: Iterable[str]) -> bool:
        return not self.blocked(model_classes, region, classes)

    def blocked(self, model_classes: Iterable[str], region: str, classes: Iterable[str]) -> frozenset[str]:
        """The request's classes this model may not receive."""
        mc = expand(model_classes)
        out = set()
        for c in classes:
            if "*" not in mc and c not in mc or c in self.regions and region not in self.regions[c]:
                out.add(c)
        return frozenset(out)

    def explain(self, model: str, model_classes: Iterable[str], region: str, classes: Iterable[str]) -> str:
        b = self.blocked(model_classes, region, classes)
        why = []
        for c in sorted(b):
            if c in self.regions and ("*" in expand(model_classes) or c in expand(model_classes)):
                why.append(f"{c} only in region(s) {', '.join(self.regions[c])}, {model} is in {region or '(no region)'}")
            else:
                why.append(f"{c} not in its data_classes")
        return f"{model}: " + "; ".join(why)


# -- audit --------------------------------------------------------------------------------------------
Action = Literal["sent", "redacted", "refused", "skipped"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    model: str
    action: Action
    data_classes: tuple[str, ...]
    digest: str  # sha256 of the message text sent (or refused); proves what without storing it
    reason: str = ""
    at: float = 0.0


def refuse(policy: DataPolicy, name: str, model_classes: Sequence[str], region: str, classes: frozenset[str], blocked: frozenset[str],
           sha256: str, sink: AuditSink | None = None) -> NoReturn:
    """Audit the refusal and raise ``DataClassNotAllowed``: what ``name`` may not receive, and why —
    the one refusal of a chat model (``Compliant``) and of an encoder (``PolicyEmbedder``)."""
    why = policy.explain(name, model_classes, region, classes)
    audit(AuditRecord(name, "refused", tuple(sorted(classes)), sha256, why, time.time()), sink)
    raise DataClassNotAllowed(f"may not receive {', '.join(sorted(blocked))} ({why})", model=name, data_classes=sorted(blocked))


def digest_texts(texts: Iterable[str]) -> str:
    """The sha256 an audit row keeps of texts (never the texts)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def digest(request: Request) -> str:
    h = hashlib.sha256()
    for m in request.messages:
        h.update(m.role.encode())
        h.update(b"\0")
        h.update(m.content.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
        for c in m.tool_calls:
            h.update(f"{c.name}\0{c.arguments}\0".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


AuditSink = Callable[[AuditRecord], None]


def audit(rec: AuditRecord, sink: AuditSink | None = None) -> None:
    a = active_run()
    if a is not None:  # every store records audits (TraceStore.record_audit)
        a[0].record_audit(rec, run_id=a[1])
    if sink is not None:
        sink(rec)
    audit_log.info("%s %s data_classes=%s sha256=%s%s", rec.model, rec.action, ",".join(rec.data_classes) or "-",
                   rec.digest[:16], f" ({rec.reason})" if rec.reason else "")


# -- the wrappers -------------------------------------------------------------------------------------
class Compliant(Wrapper):
    """The last check before a model: scans the request and refuses (``DataClassNotAllowed``, which a
    ``Fallback`` skips without a cooldown) any data class ``data_classes``/``region`` do not allow."""

    def __init__(self, inner: ChatModel, *, data_classes: Sequence[str], region: str = "", policy: DataPolicy,
                 sink: AuditSink | None = None, name: str | None = None) -> None:
        super().__init__(inner)
        self.data_classes = tuple(data_classes)
        self.region = region
        self.policy = policy
        self.sink = sink
        self._name = name

    @property
    def name(self) -> str:
        return self._name or self.inner.name

    def check(self, request: Request) -> frozenset[str]:
        classes = self.policy.detector.classes(request)
        blocked = self.policy.blocked(self.data_classes, self.region, classes)
        if blocked:
            refuse(self.policy, self.name, self.data_classes, self.region, classes, blocked, digest(request), self.sink)
        if classes:  # a request with no sensitive data leaves no row: absence of a row = nothing was found
            audit(AuditRecord(self.name, "sent", tuple(sorted(classes)), digest(request), "", time.time()), self.sink)
        return classes

    async def complete(self, request: Request) -> Completion:
        self.check(request)
        return await self.inner.complete(request)

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        self.check(request)
        return await open_stream(self.inner, request)


class ComplianceGate(Wrapper):
    """In front of a model's chain (primary + fallbacks, described by ``members`` as
    ``(name, data_classes, region)``): refuses before any call when no member may receive the
    request, or redacts the blocking classes first when every one of them is in ``policy.redact``."""

    def __init__(self, inner: ChatModel, members: Sequence[tuple[str, Sequence[str], str]], *, policy: DataPolicy,
                 sink: AuditSink | None = None) -> None:
        super().__init__(inner)
        self.members = [(n, tuple(dc), r) for n, dc, r in members]
        self.policy = policy
        self.sink = sink

    def admit(self, request: Request) -> Request:
        classes = self.policy.detector.classes(request)
        if not classes:
            return request
        blocked = {n: self.policy.blocked(dc, r, classes) for n, dc, r in self.members}
        if any(not b for b in blocked.values()):
            return request  # some member may take it as it is; the members' own checks do the rest
        # nobody may take it: redact what blocks the least-blocked member if policy allows, else refuse
        need = min(blocked.values(), key=len)
        if need <= self.policy.redact:
            red = self.policy.detector.redact_request(request, need)
            left = self.policy.detector.classes(red)
            if any(self.policy.allows(dc, r, left) for _, dc, r in self.members):
                audit(AuditRecord(self.name, "redacted", tuple(sorted(need)), digest(red),
                                  f"redacted {', '.join(sorted(need))}: no model in the chain may receive them", time.time()), self.sink)
                return red
        reasons = "; ".join(self.policy.explain(n, dc, r, classes) for n, dc, r in self.members)
        audit(AuditRecord(self.name, "refused", tuple(sorted(classes)), digest(request), reasons, time.time()), self.sink)
        raise ComplianceError(sorted(classes), [n for n, _, _ in self.members], reasons)

    async def complete(self, request: Request) -> Completion:
        return await self.inner.complete(self.admit(request))

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        return await open_stream(self.inner, self.admit(request))
