"""Limits and budgets shared through a real Redis: two ``turnout serve`` processes, one key, one limit.
(`.ci/run` starts redis-server with scripts/start-redis.sh and sets TURNOUT_TEST_REDIS_URL.)"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from test_gateway import MSG, start_server, stop

from turnout import BudgetExceeded
from turnout.server.keys import ApiKey, KeyRing
from turnout.server.limits import open_limits
from turnout.store import SQLiteStore

REDIS_URL = os.environ.get("TURNOUT_TEST_REDIS_URL")  # read at import: the autouse fixture clears TURNOUT_*
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="no Redis (set TURNOUT_TEST_REDIS_URL; .ci/run starts one)")


async def test_redis_budget_holds_under_100_concurrent_reservations():
    lim = open_limits(REDIS_URL)
    key = ApiKey("key_" + os.urandom(4).hex(), "t", ("*",), budget_usd=1.0)
    meter = lim.meter(key)  # the key's ledger, as the gateway puts it in each request's scope

    async def one():
        try:
            h = await meter.reserve(0.09)
        except BudgetExceeded:
            return False
        await asyncio.sleep(0.01)
        await meter.settle(h, 0.05)
        return True

    ok = await asyncio.gather(*(one() for _ in range(100)))
    spent = await lim.spent(key)
    assert spent <= 1.0 + 1e-9 and sum(ok) >= 11  # 11 reservations of $0.09 fit at once; settled at $0.05 more fit later
    assert spent == pytest.approx(0.05 * sum(ok))
    await lim.aclose()


@pytest.fixture
def two_servers(tmp_path, mock_process):
    model = f"{{adapter: openai, base_url: '{mock_process}', price: {{input: 1000, output: 1000}}, policies: {{retry: {{attempts: 1}}}}}}"
    (tmp_path / "models.yaml").write_text(
        f"models:\n  cheap: {model}\n  metered: {model}\n"
        # the catalog's own budget; named afresh each run, as its balance in Redis outlives the test
        f"budgets:\n  - {{scope: model, match: metered, limit_usd: 0.2, name: 'metered-{os.urandom(4).hex()}'}}\n")
    (tmp_path / "wf.yaml").write_text("name: w\nsteps:\n  - call: {model: metered, prompt: '{input}', max_tokens: 10}\n")
    store = SQLiteStore(tmp_path / "gw.db")
    ring = KeyRing(store)
    keys = {"rpm": ring.create("rpm", models=["cheap"], rpm=4), "budget": ring.create("budget", models=["cheap"], budget_usd=0.2),
            "open": ring.create("open", models=["*"], workflows=["*"])}
    store.close()
    a, base_a = start_server(tmp_path, mock_process, "--redis", REDIS_URL)
    b, base_b = start_server(tmp_path, mock_process, "--redis", REDIS_URL)
    try:
        yield {"keys": keys, "a": base_a, "b": base_b, "tmp": tmp_path}
    finally:
        stop(a)
        stop(b)


def _call(base: str, key: str, max_tokens: int = 5, model: str = "cheap") -> str:
    c = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=20)
    try:
        c.chat.completions.create(model=model, messages=MSG, max_tokens=max_tokens)
        return "ok"
    except openai.RateLimitError as e:
        return e.response.json()["error"]["code"]


def test_two_replicas_share_one_rate_limit(two_servers):
    s = two_servers
    secret = s["keys"]["rpm"][0]
    minute = int(time.time() // 60)
    results = [_call(s["a"] if i % 2 else s["b"], secret) for i in range(7)]
    if int(time.time() // 60) != minute:
        pytest.skip("the minute window turned during the test; the count spans two windows")
    assert results == ["ok"] * 4 + ["rate_limit_exceeded"] * 3  # 4 a minute, whichever replica serves them


def test_two_replicas_share_one_budget(two_servers):
    s = two_servers
    secret, key = s["keys"]["budget"]
    with ThreadPoolExecutor(8) as pool:  # $0.001 a token: each call reserves ~$0.016 and costs ~$0.005
        results = list(pool.map(lambda i: _call(s["a"] if i % 2 else s["b"], secret, 10), range(80)))
    assert "budget_exceeded" in results and results.count("ok") >= 25
    store = SQLiteStore(s["tmp"] / "gw.db")
    spent = store.spend(key=key.key_id)
    store.close()
    assert 0.15 <= spent <= 0.2  # both replicas together: never past the key's $0.20
    assert spent == pytest.approx(0.005 * results.count("ok"))


def test_two_replicas_share_the_catalogs_budget_on_every_door(two_servers):
    """The catalog's own model budget lives in Redis too: a plain call and a workflow's call to the
    model, on either replica, reserve on one balance."""
    s = two_servers
    secret = s["keys"]["open"][0]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: _call(s["a"] if i % 2 else s["b"], secret, 10,
                                                "metered" if i % 4 < 2 else "workflow/w"), range(80)))
    assert "budget_exceeded" in results and results.count("ok") >= 25
    store = SQLiteStore(s["tmp"] / "gw.db")
    spent = store.spend(model="metered")
    store.close()
    assert 0.15 <= spent <= 0.2  # both replicas and both doors together: never past the model's $0.20
    assert spent == pytest.approx(0.005 * results.count("ok"))


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_workers_share_one_rate_limit(tmp_path, mock_process):
    """``turnout serve --workers 2 --redis``: two processes on one port, one limit for a key."""
    model = f"{{adapter: openai, base_url: '{mock_process}', policies: {{retry: {{attempts: 1}}}}}}"
    (tmp_path / "models.yaml").write_text(f"models:\n  cheap: {model}\n")
    (tmp_path / "wf.yaml").write_text("name: w\nsteps:\n  - call: {model: cheap, prompt: '{input}', max_tokens: 10}\n")
    store = SQLiteStore(tmp_path / "gw.db")
    secret = KeyRing(store).create("rpm", models=["cheap"], rpm=4)[0]
    store.close()
    proc, base = start_server(tmp_path, mock_process, "--redis", REDIS_URL, "--workers", "2")
    try:
        deadline = time.monotonic() + 60  # uvicorn's supervisor starts its workers after it answers: bounded wait
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_children(proc.pid)) >= 2
        minute = int(time.time() // 60)
        results = [_call(base, secret) for _ in range(7)]
        if int(time.time() // 60) != minute:
            pytest.skip("the minute window turned during the test; the count spans two windows")
        assert results == ["ok"] * 4 + ["rate_limit_exceeded"] * 3
    finally:
        stop(proc)
