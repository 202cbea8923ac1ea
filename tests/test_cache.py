"""The response cache (``Cached``) through the catalog's stack: exact and semantic hits, what is never
cached, TTL, callers kept apart, compliance before the cache, streams, requests in flight sent once,
and the memory, store and YAML doors. (The gateway and Redis doors: test_gateway_cache.py.)"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from turnout import Catalog, ConfigError, ModelSpec, Price, Request
from turnout._errors import ComplianceError
from turnout._scope import spend_scope
from turnout._types import Completion, Message, Tool, Usage
from turnout.models.catalog import PolicySpec
from turnout.policies import MemorySink
from turnout.policies.cache import CacheSettings, ResponseCache, request_key
from turnout.policies.cache_backends import MemoryCache, StoreCache
from turnout.policies.compliance import DataPolicy
from turnout.store import SQLiteStore
from turnout.testing import FakeEmbedder, FunctionModel

CACHE = {"ttl": 60.0}
PG_URL = os.environ.get("TURNOUT_TEST_PG_URL")  # read at import: the autouse fixture clears TURNOUT_*


def _catalog(cache: dict | None = CACHE, *, reply=None, rc: ResponseCache | None = None, policy=None, classes=("*",)) -> tuple[Catalog, dict]:
    made: dict[str, FunctionModel] = {}

    def factory(spec, env):
        m = made[spec.name] = FunctionModel(reply or (lambda r: "answer to " + r.messages[-1].content), name=spec.name,
                                            price=spec.price)
        return m

    spec = ModelSpec("m", "fake", price=Price(1000, 1000), data_classes=classes, policies=PolicySpec(retry_attempts=1, cache=cache))
    return Catalog([spec], include_embedded=False, adapters={"fake": factory}, cache=rc, policy=policy), made


Q = Request.of("what is the refund policy?", temperature=0)


async def test_an_exact_repeat_is_answered_without_a_call_and_traced_as_a_free_hit(tmp_path):
    cat, made = _catalog()
    sink = MemorySink()
    m = cat.model("m", sink=sink)
    store = SQLiteStore(tmp_path / "t.db")
    with store.run("t"):
        first = await m.complete(Q)
        again = await m.complete(Q.with_(metadata={"tag": "x"}))  # tags are not part of the request
    assert made["m"].calls == 1
    assert again.text == first.text and again.cached and not first.cached
    assert again.cost_usd == 0 and first.cost_usd > 0 and again.usage == first.usage  # the client still sees the tokens
    hit = sink.events[1]
    assert hit.cached and hit.cost_usd == 0 and hit.usage.total_tokens == 0 and hit.saved_usd == pytest.approx(first.cost_usd)
    rows = store.calls()
    assert [r.cached for r in rows] == [False, True] and rows[1].saved_usd == pytest.approx(first.cost_usd)
    assert store.spend() == pytest.approx(first.cost_usd)  # the hit spent nothing
    store.close()


async def test_sampled_requests_are_not_cached_unless_asked():
    cat, made = _catalog()
    m = cat.model("m")
    for req in (Request.of("hi"), Request.of("hi"), Request.of("hi", temperature=0.7), Request.of("hi", temperature=0.7)):
        await m.complete(req)  # temperature unset samples at the provider's default: never cached by default
    assert made["m"].calls == 4
    cat2, made2 = _catalog({"ttl": 60, "sampled": True})
    m2 = cat2.model("m")
    assert not (await m2.complete(Request.of("hi"))).cached and (await m2.complete(Request.of("hi"))).cached
    assert made2["m"].calls == 1


async def test_what_counts_in_the_key():
    tool = Tool("lookup", "find an order", {"type": "object", "properties": {"id": {"type": "string"}}})
    base = Request.of("refund?", system="be brief", temperature=0)
    same = [base.with_(messages=(Message.system("be brief "), Message.user("  refund?"))), base.with_(timeout=3.0),
            base.with_(metadata={"a": "b"})]
    other = [base.with_(max_tokens=5), base.with_(messages=(Message.system("be long"), Message.user("refund?"))),
             base.with_(tools=(tool,)), base.with_(seed=1), base.with_(stop=("\n",)), base.with_(top_p=0.5)]
    k = request_key("m", base)
    assert all(request_key("m", r) == k for r in same)
    assert len({k, *(request_key("m", r) for r in other)}) == 1 + len(other)
    assert request_key("other-model", base) != k


async def test_an_entry_expires_after_its_ttl():
    now = [1000.0]
    rc = ResponseCache(MemoryCache(clock=lambda: now[0]))
    cat, made = _catalog({"ttl": 30}, rc=rc)
    m = cat.model("m")
    await m.complete(Q)
    now[0] += 29
    assert (await m.complete(Q)).cached
    now[0] += 2
    assert not (await m.complete(Q)).cached and made["m"].calls == 2


async def test_the_memory_cache_is_an_lru_bounded_by_entries():
    rc = ResponseCache(MemoryCache(max_entries=2))
    cat, made = _catalog(rc=rc)
    m = cat.model("m")
    for text in ("a", "b", "a", "c"):  # a is used again before c arrives: b is the one evicted
        await m.complete(Request.of(text, temperature=0))
    assert made["m"].calls == 3 and len(rc.backend) == 2
    assert (await m.complete(Request.of("a", temperature=0))).cached
    assert not (await m.complete(Request.of("b", temperature=0))).cached


def _sim(emb: FakeEmbedder, a: str, b: str) -> float:
    return float(emb._vec(a) @ emb._vec(b))


async def test_semantic_hits_respect_the_threshold_and_everything_else_must_match():
    emb = FakeEmbedder()
    near, far = "what is the refund policy please", "how do I reset my password"
    s_near, s_far = _sim(emb, Q.messages[0].content, near), _sim(emb, Q.messages[0].content, far)
    assert s_near > 0.6 > s_far  # the fake encoder's own view of the texts
    threshold = (s_near + s_far) / 2
    cat, made = _catalog({"ttl": 60, "semantic": threshold}, rc=ResponseCache(embedder=emb))
    m = cat.model("m")
    await m.complete(Q)
    assert (await m.complete(Request.of(near, temperature=0))).text == "answer to what is the refund policy?"
    assert not (await m.complete(Request.of(far, temperature=0))).cached
    # the last user turn may be near; the rest of the request must be identical
    assert not (await m.complete(Request.of(near, system="be brief", temperature=0))).cached
    assert not (await m.complete(Request.of(near, temperature=0, max_tokens=3))).cached
    assert made["m"].calls == 4
    # above the pair's similarity: no semantic hit
    strict, made2 = _catalog({"ttl": 60, "semantic": min(1.0, s_near + 1e-3)}, rc=ResponseCache(embedder=emb))
    await strict.model("m").complete(Q)
    assert not (await strict.model("m").complete(Request.of(near, temperature=0))).cached


async def test_callers_never_receive_each_others_entries():
    emb = FakeEmbedder()
    cat, made = _catalog({"ttl": 60, "semantic": 0.5}, rc=ResponseCache(embedder=emb))
    m = cat.model("m")
    with spend_scope(key="key_a"):
        await m.complete(Q)
        assert (await m.complete(Q)).cached
    with spend_scope(key="key_b"):  # near words from another key: its own call, not key_a's answer
        assert not (await m.complete(Request.of("what is the refund policy please", temperature=0))).cached
    with spend_scope(key="key_c"):  # the same words from another key: its own call
        assert not (await m.complete(Q)).cached
    assert made["m"].calls == 3


async def test_a_caller_opts_in_through_its_scope_and_its_settings_win():
    cat, made = _catalog(None)  # the model does not opt in
    cat.use_cache(ResponseCache())
    m = cat.model("m")
    await m.complete(Q)
    assert not (await m.complete(Q)).cached  # nobody opted in
    with spend_scope(key="k", cache=CacheSettings(ttl=60)):
        await m.complete(Q)
        assert (await m.complete(Q)).cached
    assert made["m"].calls == 3


CARD = "4111 1111 1111 1111"


async def test_a_request_the_data_policy_refuses_never_gets_a_cached_answer():
    emb = FakeEmbedder()
    base = "refund order 1234 to the card on file"
    risky = f"refund order 1234 to the card on file {CARD}"
    assert _sim(emb, base, risky) > 0.5  # near enough that a cache in front of the gate would answer it
    cat, made = _catalog({"ttl": 60, "semantic": 0.5}, rc=ResponseCache(embedder=emb), policy=DataPolicy(), classes=())
    m = cat.model("m")
    assert not (await m.complete(Request.of(base, temperature=0))).cached
    with pytest.raises(ComplianceError):
        await m.complete(Request.of(risky, temperature=0))
    with pytest.raises(ComplianceError):
        async for _ in m.stream(Request.of(risky, temperature=0)):
            pass
    assert made["m"].calls == 1


async def test_a_semantic_hit_needs_the_same_data_classes():
    emb = FakeEmbedder()
    cat, made = _catalog({"ttl": 60, "semantic": 0.3}, rc=ResponseCache(embedder=emb), policy=DataPolicy())
    m = cat.model("m")
    await m.complete(Request.of("send the receipt to my address", temperature=0))
    c = await m.complete(Request.of("send the receipt to my address jane.doe@example.com", temperature=0))
    assert not c.cached and made["m"].calls == 2  # an email in one and not the other: not the same question


async def test_streams_are_cached_replayed_and_a_cut_stream_is_not_kept():
    cat, made = _catalog()
    m = cat.model("m")
    first = [ch async for ch in m.stream(Q)]
    replay = [ch async for ch in m.stream(Q)]
    text = "".join(ch.delta for ch in first)
    assert "".join(ch.delta for ch in replay) == text and all(ch.cached for ch in replay)
    assert replay[-1].done and replay[-1].finish_reason == "stop" and replay[-1].cost_usd == 0
    assert (await m.complete(Q)).cached and made["m"].calls == 1  # one entry for both doors
    cut = Request.of("tell me a long story", temperature=0)
    agen = m.stream(cut)
    await agen.__anext__()
    await agen.aclose()
    assert not (await m.complete(cut)).cached and made["m"].calls == 3  # the cut stream, then this call


async def test_tool_calls_are_kept_and_replayed():
    from turnout._types import ToolCall

    call = ToolCall("call_1", "lookup", '{"id": "42"}')
    cat, made = _catalog(reply=lambda r: call)
    m = cat.model("m")
    req = Request.of("find order 42", temperature=0, tools=(Tool("lookup"),))
    await m.complete(req)
    hit = await m.complete(req)
    assert hit.cached and hit.tool_calls == (call,) and hit.finish_reason == "tool_calls"
    chunks = [ch async for ch in m.stream(req)]
    assert [d for ch in chunks for d in ch.tool_calls][0].name == "lookup" and made["m"].calls == 1


async def test_answers_that_did_not_finish_well_are_not_kept():
    cat, made = _catalog(reply=lambda r: Completion("partial", "m", "content_filter", Usage(1, 1)))
    m = cat.model("m")
    await m.complete(Q)
    assert not (await m.complete(Q)).cached and made["m"].calls == 2


async def test_identical_requests_in_flight_are_sent_once():
    gate = asyncio.Event()
    started = asyncio.Event()

    async def slow(r):
        started.set()
        await gate.wait()
        return "one answer"

    cat, made = _catalog(reply=slow)
    m = cat.model("m")
    tasks = [asyncio.create_task(m.complete(Q)) for _ in range(5)]
    await started.wait()
    for _ in range(5):
        await asyncio.sleep(0)  # let the others reach the cache and find the call in flight
    gate.set()
    out = await asyncio.gather(*tasks)
    assert made["m"].calls == 1 and {c.text for c in out} == {"one answer"} and sum(c.cached for c in out) == 4


async def test_the_store_backend_survives_a_restart(tmp_path):
    store = SQLiteStore(tmp_path / "c.db")
    cat, made = _catalog(rc=ResponseCache(StoreCache(store)))
    await cat.model("m").complete(Q)
    cat2, made2 = _catalog(rc=ResponseCache(StoreCache(store)))  # a new process: a new catalog, the same store
    assert (await cat2.model("m").complete(Q)).cached and made2["m"].calls == 0
    assert store.cache_purge(expired_only=False) == 1
    store.close()
    redacting = SQLiteStore(tmp_path / "r.db", redact=True)
    with pytest.raises(ConfigError, match="redacts"):
        redacting.cache_put("ns", "k", "{}", 10)
    redacting.close()


@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL (.ci/run starts one)")
async def test_the_store_backend_on_postgres():
    from turnout.store.postgres import PostgresStore

    store = PostgresStore(PG_URL)
    store.cache_purge(expired_only=False)
    cat, made = _catalog(rc=ResponseCache(StoreCache(store)))
    await cat.model("m").complete(Q)
    assert (await cat.model("m").complete(Q)).cached and made["m"].calls == 1
    store.cache_purge(expired_only=False)
    store.close()


def test_yaml_cache_settings_and_located_errors(tmp_path):
    p = tmp_path / "models.yaml"
    p.write_text("models:\n  m:\n    adapter: openai\n    policies:\n      cache: {ttl: 60, semantic: 0.9}\n"
                 "cache:\n  backend: memory\n  max_entries: 5\n")
    cat = Catalog.load(p)
    assert cat.spec("m").policies.cache == {"ttl": 60.0, "semantic": 0.9, "sampled": False}
    assert isinstance(cat.cache.backend, MemoryCache) and cat.cache.backend.max_entries == 5
    bad = [("    policies:\n      cache: {ttl: -1}\n", ":5:", "ttl"), ("    policies:\n      cache: {semantic: 2}\n", ":5:", "semantic"),
           ("    policies:\n      cache: {tll: 3}\n", ":5:", "tll")]
    for body, line, field in bad:
        p.write_text("models:\n  m:\n    adapter: openai\n" + body)
        with pytest.raises(ConfigError) as ei:
            Catalog.load(p)
        assert line in str(ei.value) and field in str(ei.value)
    p.write_text("models:\n  m: {adapter: openai}\ncache:\n  backend: memcached\n")
    with pytest.raises(ConfigError, match=r"models.yaml:3: cache: .*memcached"):
        Catalog.load(p)


def test_settings_are_checked():
    assert CacheSettings.of(True) == CacheSettings() and CacheSettings.of(None) is None and CacheSettings.of(False) is None
    for bad in ({"ttl": 0}, {"semantic": 1.5}, {"ttl": "soon"}, {"color": 1}, 3):
        with pytest.raises(ConfigError):
            CacheSettings.of(bad, "here")
    assert not CacheSettings().takes(Request.of("x", temperature=0, logprobs=3))  # entries keep no logprobs


async def test_the_semantic_index_prefers_the_closest_entry():
    from turnout.policies.cache import _Index

    idx = _Index(10)
    a, b = np.array([1.0, 0.0]), np.array([0.8, 0.6])
    idx.add(("ns", "g"), a, "ka", ())
    idx.add(("ns", "g"), b, "kb", ())
    assert idx.best(("ns", "g"), np.array([0.79, 0.61]), (), 0.5) == "kb"
    assert idx.best(("ns", "g"), np.array([0.0, 1.0]), (), 0.7) is None
    assert idx.best(("ns", "g"), a, ("email",), 0.5) is None
