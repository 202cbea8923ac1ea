"""Compliance routing: the detector (checksums, false positives, allow-list), the per-adapter guard,
the chain gate (refuse or redact), fallbacks that never cross a compliance line, and the audit trail."""

from __future__ import annotations

import hashlib

import pytest

from turnout import Catalog, ConfigError, ModelSpec, Price, Request
from turnout._errors import AllModelsFailed, ComplianceError, ProviderUnavailable
from turnout.models.catalog import PolicySpec
from turnout.policies.compliance import DataPolicy, Detector, iban_ok, luhn_ok
from turnout.store import SQLiteStore
from turnout.testing import FunctionModel

CARD = "4111 1111 1111 1111"  # Luhn-valid test number
NOT_CARD = "4111 1111 1111 1112"  # one digit off: fails Luhn
IBAN = "GB82 WEST 1234 5698 7654 32"  # the ISO 13616 example


def classes(text: str, **kw) -> set[str]:
    return set(Detector(**kw).classes(text))


@pytest.mark.parametrize(
    "text, want",
    [
        (f"my card is {CARD}, expiry 12/28", {"card"}),
        ("card 4111-1111-1111-1111", {"card"}),
        ("5500005555555559 please", {"card"}),
        (f"iban {IBAN}", {"iban"}),
        ("DE89370400440532013000", {"iban"}),
        ("write to jane.doe@example.co.uk today", {"email"}),
        ("call +44 20 7946 0958 or (212) 555-0199", {"phone"}),
        ("SSN 123-45-6789", {"national_id"}),
        ("NI number AB 12 34 56 C", {"national_id"}),
        ("key sk-proj-abcdefghijklmnopqrstuvwx1234", {"secret"}),
        ("AKIAIOSFODNN7EXAMPLE is the access key", {"secret"}),
        ('config: password = "hunter2hunter2"', {"secret"}),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", {"secret"}),
    ],
)
def test_detector_finds_each_class(text, want):
    assert classes(text) == want


@pytest.mark.parametrize(
    "text",
    [
        f"order {NOT_CARD} (fails Luhn)",
        "GB82 WEST 1234 5698 7654 33",  # IBAN checksum off by one
        "SSN 000-12-3456 is not a valid SSN",
        "meeting on 2026-11-22 at 10:30, version 1.2.3, ip 192.168.1.1",
        "ticket #123456, 5 apples, total 1,250.00 USD",
        "the token limit is 4096 and the password policy is strict",
    ],
)
def test_detector_ignores_lookalikes(text):
    assert classes(text) == set()


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112") and not luhn_ok("12345")
    assert iban_ok(IBAN) and not iban_ok(IBAN[:-1] + "3") and not iban_ok("GB82WEST123")


def test_custom_patterns_allow_list_and_redaction():
    d = Detector(custom={"employee_id": r"\bEMP-\d{6}\b"}, allow=["support@acme.example", r"\+1 800 555 \d{4}"])
    text = f"EMP-123456 wrote from bob@corp.example and support@acme.example, call +1 800 555 0100, card {CARD}"
    assert d.classes(text) == {"employee_id", "email", "card"}  # the allow-listed address and number are not findings
    red = d.redact(text)
    assert CARD not in red and "bob@corp.example" not in red and "EMP-123456" not in red
    assert "[CARD]" in red and "[EMAIL]" in red and "[EMPLOYEE_ID]" in red and "support@acme.example" in red
    assert d.redact(text, ["card"]).count("[") == 1
    with pytest.raises(ConfigError, match="unknown built-in data class"):
        Detector(["ssn"])
    with pytest.raises(ConfigError, match="bad regex"):
        Detector(custom={"x": "("})


# -- the catalog: guard, gate, fallbacks ---------------------------------------------------------------
class Fleet:
    """Fake models by name, recording exactly what each one received."""

    def __init__(self, down: set[str] = frozenset()) -> None:
        self.models: dict[str, FunctionModel] = {}
        self.down = set(down)

    def factory(self, spec, trust_env):
        def answer(req: Request, name=spec.name):
            if name in self.down:
                return ProviderUnavailable("down", model=name)
            return f"{name} ok"

        m = self.models[spec.name] = FunctionModel(answer, name=spec.name, price=spec.price)
        return m

    def seen(self, name: str) -> str:
        m = self.models.get(name)
        return "\n".join(msg.content for r in (m.history if m else []) for msg in r.messages)


def catalog(fleet: Fleet, *, policy: DataPolicy | None = None, **fallbacks) -> Catalog:
    specs = [
        ModelSpec("cloud", "fake", data_classes=(), region="us", price=Price(0.1, 0.1),
                  policies=PolicySpec(retry_attempts=1, fallback=tuple(fallbacks.get("cloud", ())))),
        ModelSpec("pci", "fake", data_classes=("financial", "pii"), region="eu", price=Price(1, 1),
                  policies=PolicySpec(retry_attempts=1, fallback=tuple(fallbacks.get("pci", ())))),
        ModelSpec("pci-us", "fake", data_classes=("card",), region="us", policies=PolicySpec(retry_attempts=1)),
    ]
    return Catalog(specs, include_embedded=False, adapters={"fake": fleet.factory}, policy=policy)


async def test_a_card_goes_only_to_an_allowed_member_of_the_chain():
    fleet = Fleet()
    cat = catalog(fleet, cloud=["pci"])
    c = await cat.model("cloud").complete(Request.of(f"refund card {CARD}"))
    assert c.text == "pci ok"
    assert CARD not in fleet.seen("cloud") and CARD in fleet.seen("pci")
    # a request without sensitive data stays on the primary
    assert (await cat.model("cloud").complete(Request.of("what are your opening hours?"))).text == "cloud ok"


async def test_fallback_never_carries_a_card_across_the_line():
    fleet = Fleet(down={"pci"})
    cat = catalog(fleet, pci=["cloud"])
    with pytest.raises(AllModelsFailed) as ei:  # pci is down; cloud may not take a card: no answer, no leak
        await cat.model("pci").complete(Request.of(f"charge {CARD}"))
    assert "may not receive card" in str(ei.value)
    assert fleet.models["pci"].calls == 1 and CARD not in fleet.seen("cloud")
    # the same chain, no card: pci is down, cloud answers
    assert (await cat.model("pci").complete(Request.of("hello"))).text == "cloud ok"


async def test_cooldown_does_not_block_the_only_allowed_member():
    fleet = Fleet(down={"pci"})
    cat = catalog(fleet, cloud=["pci"])
    fleet.down = {"pci"}
    with pytest.raises(AllModelsFailed):
        await cat.model("cloud").complete(Request.of(f"card {CARD}"))  # pci fails and cools down
    fleet.down = set()
    c = await cat.model("cloud").complete(Request.of(f"card {CARD}"))  # pci is cooling, but it is the only allowed one
    assert c.text == "pci ok" and CARD not in fleet.seen("cloud")


async def test_refused_before_any_call_when_no_model_may_receive_it(tmp_path):
    fleet = Fleet()
    cat = catalog(fleet)
    store = SQLiteStore(tmp_path / "t.db")
    with store.run("t"), pytest.raises(ComplianceError) as ei:
        await cat.model("cloud").complete(Request.of(f"pay with {CARD}"))
    msg = str(ei.value)
    assert "card" in msg and "cloud" in msg and "not in its data_classes" in msg and CARD not in msg
    assert fleet.models.get("cloud") is None or fleet.models["cloud"].calls == 0
    rows = store.audit()
    assert [(r["model"], r["action"], r["data_classes"]) for r in rows] == [("cloud", "refused", ["card"])]
    store.close()


async def test_streams_are_checked_too():
    fleet = Fleet()
    cat = catalog(fleet)
    with pytest.raises(ComplianceError):
        async for _ in cat.model("cloud").stream(Request.of(f"card {CARD}")):
            pass
    assert CARD not in fleet.seen("cloud")


async def test_redact_when_the_policy_says_so():
    fleet = Fleet()
    policy = DataPolicy(Detector(), redact=frozenset({"email", "phone"}))
    cat = catalog(fleet, policy=policy)
    c = await cat.model("cloud").complete(Request.of("reset the password of ann@example.com please"))
    assert c.text == "cloud ok"
    assert "ann@example.com" not in fleet.seen("cloud") and "[EMAIL]" in fleet.seen("cloud")
    with pytest.raises(ComplianceError):  # card is not redactable under this policy
        await cat.model("cloud").complete(Request.of(f"ann@example.com card {CARD}"))
    assert CARD not in fleet.seen("cloud")


async def test_region_rules():
    fleet = Fleet()
    policy = DataPolicy(Detector(), regions={"card": ("eu",)})
    cat = catalog(fleet, policy=policy)
    with pytest.raises(ComplianceError, match="only in region"):
        await cat.model("pci-us").complete(Request.of(f"card {CARD}"))
    assert (await cat.model("pci").complete(Request.of(f"card {CARD}"))).text == "pci ok"
    assert cat.allowed("pci", ["card"]) and not cat.allowed("pci-us", ["card"]) and cat.allowed("pci-us", [])


async def test_audit_proves_which_model_saw_which_class(tmp_path):
    fleet = Fleet()
    cat = catalog(fleet, cloud=["pci"])
    store = SQLiteStore(tmp_path / "t.db")
    req = Request.of(f"card {CARD}, mail ann@example.com")
    with store.run("t") as run_id:
        await cat.model("cloud").complete(req)
    rows = store.audit(run_id=run_id)
    assert [(r["model"], r["action"]) for r in rows] == [("cloud", "refused"), ("pci", "sent")]
    sent = rows[1]
    assert sent["data_classes"] == ["card", "email"]
    h = hashlib.sha256()
    for m in req.messages:
        h.update(m.role.encode() + b"\0" + m.content.encode() + b"\0")
    assert sent["digest"] == h.hexdigest()  # the record proves the exact text without holding it
    raw = (tmp_path / "t.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("t.db-*"))
    assert CARD.encode() not in raw
    store.close()


def test_catalog_yaml_compliance_section(tmp_path):
    p = tmp_path / "models.yaml"
    p.write_text(
        "models:\n  cloud:\n    adapter: openai\n    base_url: http://127.0.0.1:9\n    data_classes: []\n"
        "compliance:\n  custom: {employee_id: 'EMP-\\d{6}'}\n  allow: [support@acme.example]\n  redact: [pii]\n"
        "  regions: {card: [eu]}\n"
    )
    cat = Catalog.load(p, trust_env=False)
    assert cat.policy is not None and cat.classes_of("EMP-123456 at support@acme.example") == {"employee_id"}
    assert cat.policy.redact == {"email", "phone", "national_id"}
    p.write_text("models:\n  a: {adapter: openai}\ncompliance:\n  detect: [ssn]\n")
    with pytest.raises(ConfigError, match=r"models.yaml:3: compliance: unknown built-in data class"):
        Catalog.load(p)
    p.write_text("models:\n  a: {adapter: openai}\ncompliance:\n  redcat: [email]\n")
    with pytest.raises(ConfigError, match=r"models.yaml:4: compliance.redcat"):
        Catalog.load(p)
    p.write_text("models:\n  a: {adapter: openai}\nbudget: []\n")
    with pytest.raises(ConfigError, match=r"models.yaml:3: budget: unknown section"):
        Catalog.load(p)


def test_unrestricted_catalog_has_no_compliance_layers():
    cat = Catalog([ModelSpec("a", "fake")], include_embedded=False, adapters={"fake": Fleet().factory})
    assert cat.policy is None and cat.classes_of(f"card {CARD}") == frozenset()


def test_a_catalog_where_no_model_may_take_a_class_says_so(caplog):
    cat = catalog(Fleet(), policy=DataPolicy(Detector(custom={"employee_id": r"EMP-\d{6}"})))
    assert cat.uncovered() == ["employee_id", "secret"]  # pci takes financial + pii; nobody takes these two
    assert "no model in the catalog may receive employee_id, secret: requests carrying them will be refused" in caplog.text
