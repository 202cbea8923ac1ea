"""The catalog: YAML loading with located errors, lookups, declared policy stacks, shared limiters."""

from __future__ import annotations

import pytest

from turnout import Catalog, ConfigError, ModelSpec, Price, Request
from turnout.errors import UnknownModel
from turnout.policies import Budgeted, BudgetLedger, Fallback, Limited, MemorySink, Retrying, Traced
from turnout.policies.compliance import ComplianceGate, Compliant

YAML = """
models:
  cheap:
    adapter: openai
    model: gpt-cheap
    base_url: {url}
    price: {{input: 0.15, output: 0.6}}
    context_window: 128000
    tier: small
    data_classes: [public, internal]
    region: eu
    policies:
      retry: {{attempts: 4, max_delay: 2}}
      rate_limit: {{rpm: 600}}
      fallback: [backup]
  backup:
    adapter: openai
    base_url: {url}
    price: {{input: 1, output: 2}}
"""


def write(tmp_path, text):
    p = tmp_path / "models.yaml"
    p.write_text(text)
    return p


def test_load_yaml_keeps_embedded_models(tmp_path):
    cat = Catalog.load(write(tmp_path, YAML.format(url="http://127.0.0.1:9/v1")))
    assert {"local", "local-strong", "cheap", "backup"} <= set(cat.names())
    s = cat.spec("cheap")
    assert s.price == Price(0.15, 0.6) and s.tier == "small" and s.data_classes == ("public", "internal") and s.region == "eu"
    assert s.policies.retry_attempts == 4 and s.policies.rpm == 600 and s.policies.fallback == ("backup",)
    assert cat.spec("local").price.free


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModel) as ei:
        Catalog().spec("gpt-5")
    assert "local" in str(ei.value) and "gpt-5" in str(ei.value)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("models:\n  a:\n    adapter: openai\n    price: {input: -1}\n", ":4: models.a.price.input"),
        ("models:\n  a:\n    adapter: openai\n    context_windw: 5\n", ":4: models.a.context_windw: Extra inputs"),
        ("models:\n  a:\n    model: x\n", "models.a.adapter: Field required"),
        ("models: [1, 2]\n", "top-level 'models:' mapping"),
        ("models:\n  a: {adapter: openai\n", "not valid YAML"),
        ("models:\n  a:\n    adapter: martian\n", "unknown adapter 'martian'"),
        ("models:\n  a:\n    adapter: openai\n    policies: {fallback: [ghost]}\n", "fallback 'ghost' is not in the catalog"),
    ],
)
def test_bad_catalog_files_name_file_line_and_field(tmp_path, text, expect):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        Catalog.load(p)
    assert str(p) in str(ei.value) and expect in str(ei.value)


def test_declared_policies_are_stacked(tmp_path, mock_server):
    cat = Catalog.load(write(tmp_path, YAML.format(url=mock_server.url)))
    m = cat.model("cheap", sink=MemorySink(), ledger=BudgetLedger(1.0))
    assert isinstance(m, Traced)
    gate = m.inner.inner  # Traced -> Budgeted -> ComplianceGate (cheap declares data_classes) -> Fallback
    assert isinstance(gate, ComplianceGate) and [n for n, _, _ in gate.members] == ["cheap", "backup"]
    chain = gate.inner
    assert isinstance(chain, Fallback) and [x.name for x in chain.models] == ["cheap", "backup"]
    # each member is charged on its own (Budgeted: the catalog's budgets and the scope's meters, e.g. a gateway key)
    member = chain.models[0]
    assert isinstance(member, Budgeted) and isinstance(member.inner, Retrying) and isinstance(member.inner.inner, Limited)
    assert isinstance(member.inner.inner.inner, Compliant)  # innermost: the last check before the adapter


async def test_callers_share_one_limiter_and_fallback_state(tmp_path, mock_server):
    cat = Catalog.load(write(tmp_path, YAML.format(url=mock_server.url)))
    a, b = cat.model("cheap").inner.inner, cat.model("cheap").inner.inner  # under Traced and the gate: the shared Fallback chain
    assert a is b and a.models[0].inner.inner.limiter is b.models[0].inner.inner.limiter
    mock_server.fail("401")  # cheap fails for good -> backup answers, and cheap cools down for everyone
    sink = MemorySink()
    c = await cat.model("cheap", sink=sink).complete(Request.of("hi"))
    assert c.model == "backup" and sink.events[-1].fallback == "backup"
    assert mock_server.requests[-1].body["model"] == "backup"
    await cat.aclose()


def test_python_built_catalog_and_custom_adapter():
    from turnout.testing import ScriptedModel

    cat = Catalog([ModelSpec("fake", "scripted", price=Price(1, 1))], adapters={"scripted": lambda spec, env: ScriptedModel(default="hi", name=spec.name, price=spec.price)})
    m = cat.model("fake")
    assert m.name == "fake" and cat.adapter("fake") is cat.adapter("fake")


def test_cloud_model_without_key_fails_with_the_variable(tmp_path):
    cat = Catalog.load(write(tmp_path, "models:\n  gpt:\n    adapter: openai\n    api_key_env: MY_OPENAI\n"))
    with pytest.raises(ConfigError, match="MY_OPENAI"):
        cat.model("gpt")


def test_auto_is_the_one_model_router_config_and_names_no_routers(tmp_path):
    from turnout.models.catalog import ModelRouterConfig

    p = tmp_path / "models.yaml"
    p.write_text("models:\n  cheap: {adapter: local}\nauto:\n  tiers: {easy: [cheap]}\n  complexity: {hard_words: 'proof'}\n")
    cat = Catalog.load(p)
    assert isinstance(cat.auto, ModelRouterConfig) and cat.auto.complexity.hard_words == "proof"  # the workflows' schema
    p.write_text("models:\n  cheap: {adapter: local}\nauto:\n  complexity: {router: mine}\n")
    with pytest.raises(ConfigError, match=r"models.yaml:4: auto.complexity.router: a catalog has no routers"):
        Catalog.load(p)


async def test_a_models_cap_and_rate_hold_across_the_catalogs_copies():
    """Two workflows extending one catalog call the same upstream: its max_concurrency is one cap."""
    import asyncio

    from turnout import Completion
    from turnout.models import ModelSpec as Spec
    from turnout.models import PolicySpec as Pol

    release, state = asyncio.Event(), {"active": 0, "max": 0}

    class Held:
        name, price = "up", Price()

        async def complete(self, request):
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
            await release.wait()
            state["active"] -= 1
            return Completion("ok", "up")

        async def aclose(self):
            return None

    base = Catalog([Spec("up", "held", policies=Pol(retry_attempts=1, max_concurrency=2))], include_embedded=False,
                   adapters={"held": lambda spec, env: Held()})
    a, b = base.extend([Spec("extra-a", "held")]), base.extend([Spec("extra-b", "held")])
    tasks = [asyncio.create_task(c.model("up").complete(Request.of("x"))) for c in (a, b, a, b, a, b)]
    for _ in range(50):  # let every call that may start do so (event-loop turns, not a timing window)
        await asyncio.sleep(0)
    assert state["active"] == 2
    release.set()
    await asyncio.gather(*tasks)
    assert state["max"] == 2
