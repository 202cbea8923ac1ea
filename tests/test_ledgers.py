"""The one Ledger and the one Limiter, run on each backend that keeps their state: this process
(memory), Redis (every gateway replica) and the Ray gate actor (every worker of a batch).

The same assertions on each: reserve → settle books the real cost, a refusal names the budget and
holds nothing, 100 concurrent reservations never pass the limit, two processes sharing the backend
hold one limit; token buckets queue callers at the rate, ``admit`` refuses without taking, TPM
settles to the real count. (.ci/run starts Redis; Ray is in '.[test]'.)"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from turnout import BudgetExceeded
from turnout._scope import spend_scope
from turnout.policies import Budget, BudgetLedger, MemoryAccounts, MemoryBuckets, RateLimiter, SpendControl

REDIS_URL = os.environ.get("TURNOUT_TEST_REDIS_URL")  # read at import: the autouse fixture clears TURNOUT_*
BACKENDS = ["memory", "redis", "ray"]


@pytest.fixture(scope="module")
def ray_gate():
    ray = pytest.importorskip("ray")
    from turnout.workflows.ray_backend import _GateState

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    gate = ray.remote(num_cpus=0)(_GateState).options(max_concurrency=1000).remote({})
    yield gate
    ray.kill(gate)
    if started:
        ray.shutdown()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """``(make_accounts, make_buckets)``: each call is another process's view of the same state."""
    if request.param == "memory":
        acc, bk = MemoryAccounts(), MemoryBuckets()
        yield (lambda: acc), (lambda: bk)
    elif request.param == "redis":
        if not REDIS_URL:
            pytest.skip("no Redis (set TURNOUT_TEST_REDIS_URL; .ci/run starts one)")
        from turnout.policies.shared import RedisAccounts, RedisBuckets

        # a client per view, made (and bound to the loop) inside the test; each test's loop closes its sockets
        yield (lambda: RedisAccounts(REDIS_URL)), (lambda: RedisBuckets(REDIS_URL))
    else:
        from turnout.workflows.ray_backend import RayAccounts, RayBuckets

        gate = request.getfixturevalue("ray_gate")
        yield (lambda: RayAccounts(gate, uuid.uuid4().hex)), (lambda: RayBuckets(gate))


def _name() -> str:
    return f"test:{uuid.uuid4().hex}"  # a fresh account / bucket: Redis and the gate outlive one test


# -- Ledger ---------------------------------------------------------------------------------------------
async def test_reserve_settle_release(backend):
    led = BudgetLedger(1.0, name="team budget", accounts=backend[0](), account=_name())
    h = await led.reserve(0.4)
    assert await led.balance() == (0.0, pytest.approx(0.4), 0)
    await led.settle(h, 0.25)
    await led.settle(h, 0.25)  # once only
    assert await led.balance() == (pytest.approx(0.25), pytest.approx(0.0), 1)
    await led.release(await led.reserve(0.5))  # cost nothing: not a call
    assert await led.balance() == (pytest.approx(0.25), pytest.approx(0.0), 1)


async def test_a_refusal_names_the_budget_and_holds_nothing(backend):
    led = BudgetLedger(1.0, name="team budget", accounts=backend[0](), account=_name(), seed=0.7)
    with pytest.raises(BudgetExceeded) as ei:
        await led.reserve(0.5)  # $0.70 already spent (the seed) + $0.50 > $1.00
    assert "team budget" in str(ei.value)
    assert await led.balance() == (pytest.approx(0.7), pytest.approx(0.0), 0)
    await led.settle(await led.reserve(0.3), 0.3)  # exactly the limit fits
    assert (await led.balance())[0] == pytest.approx(1.0)


async def test_seed_applies_to_a_new_account_only(backend):
    acc, name = backend[0](), _name()
    a = BudgetLedger(1.0, accounts=acc, account=name, seed=0.5)
    await a.settle(await a.reserve(0.1), 0.1)
    b = BudgetLedger(1.0, accounts=backend[0](), account=name, seed=0.9)  # a second process, a stale seed
    assert (await b.balance())[0] == pytest.approx(0.6)
    await b.settle(await b.reserve(0.1), 0.1)
    assert (await a.balance())[0] == pytest.approx(0.7)


async def test_100_concurrent_reservations_from_two_processes_never_pass_the_limit(backend):
    name = _name()
    views = [BudgetLedger(1.0, name="shared", accounts=backend[0](), account=name) for _ in range(2)]

    async def one(i: int) -> bool:
        led = views[i % 2]
        try:
            h = await led.reserve(0.09)
        except BudgetExceeded:
            return False
        await asyncio.sleep(0)  # the other callers reserve meanwhile
        await led.settle(h, 0.05)
        return True

    ok = await asyncio.gather(*(one(i) for i in range(100)))
    spent, reserved, calls = await views[0].balance()
    assert spent <= 1.0 + 1e-9 and reserved == pytest.approx(0.0) and sum(ok) >= 11  # 11 × $0.09 fit at once
    assert spent == pytest.approx(0.05 * sum(ok)) and calls == sum(ok)
    assert sum(ok) < 100


async def test_spend_control_on_shared_accounts_is_one_budget_per_member(backend):
    team = f"team-{uuid.uuid4().hex[:8]}"
    a = SpendControl([Budget(1.0, "team", "*", period="day")], accounts=backend[0]())
    b = SpendControl([Budget(1.0, "team", "*", period="day")], accounts=backend[0]())  # another replica
    with spend_scope(team=team):
        await a.settle(await a.reserve(0.6), 0.6)
        with pytest.raises(BudgetExceeded) as ei:
            await b.reserve(0.5)  # the other replica's $0.60 counts
        assert team in str(ei.value)
        await b.settle(await b.reserve(0.4), 0.4)
        assert [s.spent_usd for s in await b.status()] == [pytest.approx(1.0)]
    with spend_scope(team=team + "-other"):  # another member has its own ledger
        await b.release(await b.reserve(0.9))


async def test_ray_gate_gives_back_what_a_dead_worker_held(ray_gate):
    from turnout.workflows.ray_backend import RayAccounts

    owner, name = uuid.uuid4().hex, _name()
    dying = BudgetLedger(1.0, accounts=RayAccounts(ray_gate, owner), account=name)
    await dying.reserve(0.8)  # never settled: the worker dies
    alive = BudgetLedger(1.0, accounts=RayAccounts(ray_gate, uuid.uuid4().hex), account=name)
    with pytest.raises(BudgetExceeded):
        await alive.reserve(0.5)
    assert await ray_gate.release_owner.remote(owner) == 1
    await alive.settle(await alive.reserve(0.5), 0.5)
    assert await alive.balance() == (pytest.approx(0.5), pytest.approx(0.0), 1)


# -- Limiter --------------------------------------------------------------------------------------------
def _limiter(backend, clock, sleeps=None, name=None, **kw):
    async def sleep(d: float) -> None:
        sleeps.append(d)

    return RateLimiter(buckets=backend[1](), clock=lambda: clock[0], sleep=sleep, name=name or _name(), **kw)


async def test_acquire_queues_callers_at_the_rate(backend):
    clock, sleeps = [1_000.0], []
    lim = _limiter(backend, clock, sleeps, rpm=600, burst=2)  # 10 a second, 2 at once
    for _ in range(5):
        await lim.acquire(0)
    assert sleeps == pytest.approx([0.1, 0.2, 0.3])  # the burst, then one every 0.1 s in arrival order
    clock[0] += 1.0  # the debt is repaid and the bucket full again
    sleeps.clear()
    for _ in range(3):
        await lim.acquire(0)
    assert sleeps == pytest.approx([0.1])


async def test_admit_refuses_without_taking(backend):
    clock = [1_000.0]
    lim = _limiter(backend, clock, rpm=2, burst=2, tpm=1000, token_burst=1000)
    assert await lim.admit(10) is None and await lim.admit(10) is None
    what, wait = await lim.admit(10)
    assert what == "requests" and wait == pytest.approx(30.0)  # 2 a minute: the next one fits in 30 s
    clock[0] += 30.0
    assert await lim.admit(10) is None
    clock[0] += 60.0  # both buckets full again
    assert await lim.admit(999) is None  # 1 request and 1 token left
    what, wait = await lim.admit(500)
    assert what == "tokens" and wait == pytest.approx(499 / (1000 / 60))
    assert await lim.admit(1) is None  # the request the refused one took was given back


async def test_tpm_settles_to_the_real_count(backend):
    clock, sleeps = [1_000.0], []
    lim = _limiter(backend, clock, sleeps, tpm=6000, token_burst=200)  # 100 tokens a second
    await lim.acquire(200)
    await lim.settle(200, 101)  # 99 come back
    await lim.acquire(200)
    assert sleeps == pytest.approx([1.01], abs=0.02)  # waits for the 101 it lacks


async def test_100_concurrent_admits_from_two_processes_admit_exactly_the_burst(backend):
    clock, name = [1_000.0], _name()
    views = [_limiter(backend, clock, name=name, rpm=10, burst=10) for _ in range(2)]
    res = await asyncio.gather(*(views[i % 2].admit(0) for i in range(100)))
    assert sum(r is None for r in res) == 10  # one bucket for both, checked and taken atomically
