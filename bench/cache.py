"""The response cache's latency, as ratios against baselines measured in the same run.

- **exact hit** through the catalog's full stack (``Traced(Cached(...))``) on each backend
  (memory; the SQLite store; Redis when ``--redis`` is given): median and p95 per hit, against
  the target of 1 ms, and against a miss — a real call to the local mock OpenAI server at
  ``--latency`` — measured in the same run (what a hit saves).
- **semantic hit** on the embedded MiniLM: the median hit minus the median ``embed`` of the
  same text by the same encoder in the same run (target: ≤ 1 ms beyond the encoder).

    python bench/cache.py                     # memory and store; 2,000 hits each
    python bench/cache.py --redis redis://127.0.0.1:6390/0 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from turnout import Catalog, ModelSpec, Price, Request  # noqa: E402
from turnout.models.catalog import PolicySpec  # noqa: E402
from turnout.policies.cache import ResponseCache  # noqa: E402
from turnout.policies.cache_backends import MemoryCache, RedisCache, StoreCache  # noqa: E402
from turnout.store import SQLiteStore  # noqa: E402
from turnout.testing import MockServer  # noqa: E402


def _catalog(base_url: str, rc: ResponseCache, semantic: float | None = None) -> Catalog:
    spec = ModelSpec("m", "openai", "mock", base_url=base_url, api_key_env="BENCH_NO_KEY", price=Price(1, 2),
                     policies=PolicySpec(retry_attempts=1, cache={"ttl": 3600, "semantic": semantic}))
    return Catalog([spec], include_embedded=False, cache=rc, trust_env=False)


def _stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_ms": round(statistics.median(xs) * 1000, 4), "p95_ms": round(xs[int(0.95 * (len(xs) - 1))] * 1000, 4)}


async def _time(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await fn(i)
        out.append(time.perf_counter() - t0)
    return out


async def exact(base_url: str, rc: ResponseCache, n: int, misses: int) -> dict[str, object]:
    cat = _catalog(base_url, rc)
    m = cat.model("m")
    reqs = [Request.of(f"question {i}: what is the refund window?", temperature=0) for i in range(misses)]
    miss = await _time(lambda i: m.complete(reqs[i]), misses)  # each one a real call (and now cached)
    hit = await _time(lambda i: m.complete(reqs[i % misses]), n)
    await cat.aclose()
    h, mi = _stats(hit), _stats(miss)
    return {"hit": h, "miss": mi, "hit_vs_miss": round(h["median_ms"] / mi["median_ms"], 4), "meets_1ms": h["p95_ms"] <= 1.0}


async def semantic(base_url: str, n: int) -> dict[str, object]:
    from turnout.models.embedder import LocalEmbedder

    emb = LocalEmbedder()
    await emb.embed(["warm up"])
    cat = _catalog(base_url, ResponseCache(MemoryCache(), embedder=emb), semantic=0.9)
    m = cat.model("m")
    await m.complete(Request.of("what is the refund window for an order?", temperature=0))
    near = Request.of("what's the refund window for an order?", temperature=0)  # a near miss of the exact key
    enc, hit = [], []
    for _ in range(n):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        await emb.embed([near.messages[-1].content])
        enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        c = await m.complete(near)
        hit.append(time.perf_counter() - t0)
        assert c.cached, "the near request should be a semantic hit"
    await cat.aclose()
    e, h = _stats(enc), _stats(hit)
    beyond = round(h["median_ms"] - e["median_ms"], 4)
    return {"encoder": e, "hit": h, "beyond_encoder_ms": beyond, "meets_1ms": beyond <= 1.0}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {"n": args.n, "latency_s": args.latency}
    async with MockServer(latency=args.latency) as mock:
        out["memory"] = await exact(mock.url, ResponseCache(MemoryCache()), args.n, args.misses)
        with tempfile.TemporaryDirectory() as d:
            store = SQLiteStore(Path(d) / "cache.db")
            out["sqlite"] = await exact(mock.url, ResponseCache(StoreCache(store)), args.n, args.misses)
            store.close()
        if args.redis:
            rc = RedisCache(args.redis, prefix=f"bench{time.time_ns()}")
            out["redis"] = await exact(mock.url, ResponseCache(rc), args.n, args.misses)
            await rc.aclose()
        if not args.no_semantic:
            out["semantic"] = await semantic(mock.url, max(50, args.n // 10))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="hits per backend")
    ap.add_argument("--misses", type=int, default=50, help="distinct requests (each a real call first)")
    ap.add_argument("--latency", type=float, default=0.02, help="the mock server's latency per call (s)")
    ap.add_argument("--redis", default=None, help="a redis:// URL to measure the Redis backend too")
    ap.add_argument("--no-semantic", action="store_true", help="skip the semantic run (needs the embedded MiniLM)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(res, indent=2))
        return
    for k in ("memory", "sqlite", "redis"):
        if k in res:
            r = res[k]
            print(f"exact hit, {k:6}: median {r['hit']['median_ms']:.3f} ms, p95 {r['hit']['p95_ms']:.3f} ms "
                  f"(target <= 1 ms: {'met' if r['meets_1ms'] else 'NOT met'}); a miss {r['miss']['median_ms']:.2f} ms; "
                  f"hit/miss {r['hit_vs_miss']:.4f}")
    if "semantic" in res:
        s = res["semantic"]
        print(f"semantic hit: median {s['hit']['median_ms']:.3f} ms; the encoder alone {s['encoder']['median_ms']:.3f} ms; "
              f"beyond the encoder {s['beyond_encoder_ms']:.3f} ms (target <= 1 ms: {'met' if s['meets_1ms'] else 'NOT met'})")


if __name__ == "__main__":
    main()
