"""Client CPU per call: raw aiohttp vs turnout's OpenAI-compatible adapter with the default policy stack.

Starts turnout's mock server in a separate process (50 ms latency by default), then fans out N chat
calls at concurrency CAP, once with a minimal hand-written aiohttp client (the baseline) and once
through ``Traced(Retrying(Limited(OpenAICompatible)))``, interleaved, for several repetitions, in
the same run. Prints the client CPU µs per call for both and their ratio (target ≤ 1.2×), wall time
against the ideal ceil(N/CAP) × latency, and RSS.

    python bench/overhead.py                     # 1000 calls, cap 64
    python bench/overhead.py --n 5000 --cap 256
    python bench/overhead.py --json
    python bench/overhead.py --n 5000 --cap 256 --sweep 0.05,0.25,1,2   # wall time vs ideal per latency

``--sweep`` measures wall time only, for raw aiohttp and for turnout's fan-out engine (sectioning
over the full stack), at each model latency: the ideal is ceil(N/CAP) × latency, and the gap to it
is client and server CPU, which a short latency cannot hide on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp

from turnout import OpenAICompatible, Request
from turnout.policies import Limited, MemorySink, RateLimiter, Retrying, Traced


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pin(server_pid: int) -> None:
    """On a machine with 2+ CPUs, the mock server gets the last CPU and this process the others:
    the two no longer take turns on one core, so the client's CPU per call is measured with far
    less noise (process_time counts only this process either way)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(server_pid, {cpus[-1]})
        os.sched_setaffinity(0, set(cpus[:-1]))


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnout.testing.mockserver", "--port", "0", "--latency", str(latency)],
        stdout=subprocess.PIPE, text=True,
    )
    pin(proc.pid)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"mock server failed to start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


async def fan_out(n: int, cap: int, call: Callable[[int], Awaitable[str]]) -> None:
    sem = asyncio.Semaphore(cap)

    async def one(i: int) -> str:
        async with sem:
            return await call(i)

    out = await asyncio.gather(*(one(i) for i in range(n)))
    assert len(out) == n and out[0], "calls must return text"


class RawClient:
    """The baseline: what a careful engineer writes by hand with aiohttp."""

    def __init__(self, url: str, cap: int) -> None:
        self.url = url + "/chat/completions"
        self.cap = cap
        self.session: aiohttp.ClientSession | None = None

    async def call(self, i: int) -> str:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.cap))
        body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 64}).encode()
        async with self.session.post(self.url, data=body, headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            doc = json.loads(await r.read())
        return doc["choices"][0]["message"]["content"]

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class TurnoutClient:
    """turnout's adapter with the default policy stack: trace + retry + rate limit (not binding)."""

    def __init__(self, url: str, cap: int) -> None:
        self.adapter = OpenAICompatible("mock", base_url=url, api_key="sk-bench", pool_size=cap)
        self.sink = MemorySink()
        limiter = RateLimiter(rpm=10_000_000, tpm=10_000_000_000)
        self.model = Traced(Retrying(Limited(self.adapter, limiter)), self.sink)

    async def call(self, i: int) -> str:
        c = await self.model.complete(Request.of(f"question {i}", max_tokens=64))
        return c.text

    async def close(self) -> None:
        await self.adapter.aclose()


class BareAdapterClient(TurnoutClient):
    """The adapter alone, no policies: separates adapter cost from policy cost."""

    async def call(self, i: int) -> str:
        c = await self.adapter.complete(Request.of(f"question {i}", max_tokens=64))
        return c.text


class SQLiteTracedClient(TurnoutClient):
    """The same stack, tracing every call to a SQLite file (batched writes off the hot path)."""

    def __init__(self, url: str, cap: int) -> None:
        import tempfile

        from turnout.store import SQLiteStore

        super().__init__(url, cap)
        self._dir = tempfile.TemporaryDirectory()
        self.store = SQLiteStore(f"{self._dir.name}/bench.db")
        limiter = RateLimiter(rpm=10_000_000, tpm=10_000_000_000)
        self.model = Traced(Retrying(Limited(self.adapter, limiter)), self.store)

    async def close(self) -> None:
        await super().close()
        self.store.close()
        self._dir.cleanup()


class SectioningClient(TurnoutClient):
    """The same stack driven by turnout's fan-out engine through sectioning (map + concatenate)."""

    async def batch(self, n: int, cap: int) -> None:
        from turnout.parallel import run_sections, split_items

        res = await run_sections(split_items([f"question {i}" for i in range(n)]), self.model, "{section}",
                                 concurrency=cap, max_tokens=64)
        assert not res.failed and len(res.outputs) == n


TOOLS_WIRE = [{"type": "function", "function": {
    "name": f"tool_{k}", "description": f"Tool number {k}: looks something up by its id and returns a JSON record.",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["id"]}}}
    for k in range(5)]


class RawToolsClient(RawClient):
    """The baseline with 5 tool definitions in every request, reading the tool call back."""

    async def call(self, i: int) -> str:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.cap))
        body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 64,
                           "tools": TOOLS_WIRE}).encode()
        async with self.session.post(self.url, data=body, headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            doc = json.loads(await r.read())
        call = doc["choices"][0]["message"]["tool_calls"][0]["function"]
        json.loads(call["arguments"])  # what a careful client does: check the arguments are JSON
        return str(call["name"])


class TurnoutToolsClient(TurnoutClient):
    """turnout's stack with the same 5 tools as ``Tool`` values: encoded, parsed, checked."""

    def __init__(self, url: str, cap: int) -> None:
        from turnout._types import Tool

        super().__init__(url, cap)
        self.tools = tuple(Tool(t["function"]["name"], t["function"]["description"], t["function"]["parameters"]) for t in TOOLS_WIRE)

    async def call(self, i: int) -> str:
        c = await self.model.complete(Request.of(f"question {i}", max_tokens=64, tools=self.tools))
        return c.tool_calls[0].name


class RawStreamClient(RawClient):
    """The streaming baseline: SSE read line by line on a pooled aiohttp session, deltas joined."""

    async def call(self, i: int) -> str:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.cap))
        body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 64,
                           "stream": True}).encode()
        parts = []
        async with self.session.post(self.url, data=body, headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            async for line in r.content:
                if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                    doc = json.loads(line[6:])
                    if doc.get("choices"):
                        parts.append(doc["choices"][0]["delta"].get("content") or "")
        return "".join(parts)


class TurnoutStreamClient(TurnoutClient):
    """The same stack, streaming: the adapter's SSE reader, trace recorded at the final chunk."""

    async def call(self, i: int) -> str:
        return "".join([c.delta async for c in self.model.stream(Request.of(f"question {i}", max_tokens=64))])

    async def close(self) -> None:
        self.retries = sum(e.retries for e in self.sink.events)
        self.stale = self.adapter._http.stale_retries
        await super().close()


VOTES = 5  # samples per question in the voting pair


class RawVoteClient(RawClient):
    """The voting baseline: each question sampled VOTES times at once with raw aiohttp (a seed each,
    the temperature turnout's ``sampler`` uses), the plurality taken with a ``Counter``; cap // VOTES
    questions at a time, so as many calls are in flight as in the other clients."""

    async def sample(self, q: int, s: int) -> str:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.cap))
        body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": f"question {q}"}], "max_tokens": 64,
                           "temperature": 0.4, "seed": 100 + s}).encode()
        async with self.session.post(self.url, data=body, headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            doc = json.loads(await r.read())
        return doc["choices"][0]["message"]["content"]

    async def batch(self, n: int, cap: int) -> None:
        sem = asyncio.Semaphore(max(1, cap // VOTES))

        async def question(q: int) -> str:
            async with sem:
                answers = await asyncio.gather(*(self.sample(q, s) for s in range(VOTES)))
            return Counter(answers).most_common(1)[0][0]

        out = await asyncio.gather(*(question(q) for q in range(n // VOTES)))
        assert len(out) == n // VOTES and out[0], "every question must have an answer"


class SQLiteVoteClient(SQLiteTracedClient):
    """turnout's ``vote`` over the stack traced to SQLite: VOTES samples per question (fixed N, all
    at once: the same calls as the baseline), each question a run in the store with its verdict."""

    async def batch(self, n: int, cap: int) -> None:
        from turnout.parallel import sampler, vote

        sem = asyncio.Semaphore(max(1, cap // VOTES))

        async def question(q: int) -> str | None:
            async with sem:
                with self.store.run("vote", f"question {q}"):
                    v = await vote(sampler(self.model, Request.of(f"question {q}", max_tokens=64)), VOTES, early_stop=None, wave=VOTES)
            assert v.samples_used == VOTES
            return v.answer

        out = await asyncio.gather(*(question(q) for q in range(n // VOTES)))
        assert len(out) == n // VOTES and out[0], "every question must have an answer"


class SQLiteSectioningClient(SQLiteTracedClient):
    """Sectioning through the fan-out engine, the stack traced to SQLite."""

    batch = SectioningClient.batch


CLIENTS = {"aiohttp": RawClient, "turnout": TurnoutClient, "adapter-only": BareAdapterClient, "sectioning": SectioningClient,
           "sqlite-trace": SQLiteTracedClient, "aiohttp-tools": RawToolsClient, "turnout-tools": TurnoutToolsClient,
           "aiohttp-stream": RawStreamClient, "turnout-stream": TurnoutStreamClient, "sectioning-sqlite": SQLiteSectioningClient,
           "aiohttp-vote": RawVoteClient, "vote-sqlite": SQLiteVoteClient}


# headline ratio -> (client, its baseline): each against the raw client doing the same work
RATIOS = {"ratio_cpu": ("turnout", "aiohttp"), "ratio_cpu_adapter_only": ("adapter-only", "aiohttp"),
          "ratio_cpu_sectioning": ("sectioning", "aiohttp"), "ratio_cpu_sqlite_trace": ("sqlite-trace", "aiohttp"),
          "ratio_cpu_tools": ("turnout-tools", "aiohttp-tools"), "ratio_cpu_stream": ("turnout-stream", "aiohttp-stream"),
          "ratio_cpu_sectioning_sqlite": ("sectioning-sqlite", "aiohttp"), "ratio_cpu_vote_sqlite": ("vote-sqlite", "aiohttp-vote")}


async def server_stats(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/_mock/stats") as r:
        return await r.json()  # type: ignore[no-any-return]


async def measure(kind: str, url: str, n: int, cap: int) -> dict[str, float]:
    client = CLIENTS[kind](url, cap)
    batch = getattr(client, "batch", None)
    out: dict[str, float] = {}
    try:
        before = await server_stats(url)
        await fan_out(min(n, cap * 2), cap, client.call)  # warm the pool
        gc.collect()
        r0 = rss_mb()
        c0, w0 = time.process_time(), time.perf_counter()
        if batch is not None:
            await batch(n, cap)  # the client drives its own fan-out
        else:
            await fan_out(n, cap, client.call)
        c1, w1 = time.process_time(), time.perf_counter()
        after = await server_stats(url)
        out = {"cpu_us_per_call": (c1 - c0) / n * 1e6, "wall_s": w1 - w0, "rss_delta_mb": rss_mb() - r0,
               "connections": after["connections"] - before["connections"]}  # opened by this client (warm-up included)
    finally:
        await client.close()
    out["retries"] = getattr(client, "retries", 0)
    out["stale_retries"] = getattr(client, "stale", 0)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    proc, url = start_server(args.latency)
    try:
        kinds = [k for k in CLIENTS if not args.only or k in args.only.split(",")]
        results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for rep in range(args.reps):
            order = kinds if rep % 2 == 0 else kinds[::-1]
            for kind in order:
                results[kind].append(await measure(kind, url, args.n, args.cap))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    ideal = math.ceil(args.n / args.cap) * args.latency
    summary: dict[str, object] = {"n": args.n, "cap": args.cap, "latency_s": args.latency, "reps": args.reps, "ideal_wall_s": ideal}
    for kind, rs in results.items():
        summary[kind] = {
            "cpu_us_per_call_median": statistics.median(r["cpu_us_per_call"] for r in rs),
            "cpu_us_per_call_all": [round(r["cpu_us_per_call"], 1) for r in rs],
            "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            "wall_vs_ideal": statistics.median(r["wall_s"] for r in rs) / ideal,
            "rss_delta_mb_median": statistics.median(r["rss_delta_mb"] for r in rs),
            "connections_median": statistics.median(r["connections"] for r in rs),
            "retries_total": sum(r["retries"] for r in rs), "stale_retries_total": sum(r["stale_retries"] for r in rs),
        }
    # each repetition measures every client back to back, so the per-repetition ratio cancels the
    # slow drift of a shared machine; the median of those paired ratios is the headline number
    for key, (kind, base) in RATIOS.items():
        if results.get(kind) and results.get(base):
            paired = [t["cpu_us_per_call"] / a["cpu_us_per_call"] for t, a in zip(results[kind], results[base], strict=True)]
            summary[key] = statistics.median(paired)
            summary[key + "_all"] = [round(x, 3) for x in paired]
    summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary["target_ratio"] = 1.2
    summary["python"] = sys.version.split()[0]
    summary["cpus"] = os.cpu_count()
    return summary


async def sweep_async(args: argparse.Namespace) -> dict[str, object]:
    rows = []
    for latency in [float(x) for x in args.sweep.split(",")]:
        proc, url = start_server(latency)
        try:
            walls: dict[str, list[float]] = {"aiohttp": [], "sectioning": []}
            for rep in range(args.reps):
                for kind in (["aiohttp", "sectioning"] if rep % 2 == 0 else ["sectioning", "aiohttp"]):
                    walls[kind].append((await measure(kind, url, args.n, args.cap))["wall_s"])
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        ideal = math.ceil(args.n / args.cap) * latency
        raw, eng = statistics.median(walls["aiohttp"]), statistics.median(walls["sectioning"])
        rows.append({"latency_s": latency, "ideal_s": ideal, "aiohttp_wall_s": raw, "turnout_wall_s": eng,
                     "aiohttp_vs_ideal": raw / ideal, "turnout_vs_ideal": eng / ideal, "turnout_vs_aiohttp": eng / raw,
                     "walls": {k: [round(w, 3) for w in v] for k, v in walls.items()}})
    return {"n": args.n, "cap": args.cap, "reps": args.reps, "target_vs_ideal": 1.1, "cpus": os.cpu_count(), "rows": rows}


def print_sweep(r: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"wall time vs ideal: {r['n']} calls, cap {r['cap']}, {r['reps']} reps (medians)")
    for col in ("latency", "ideal s", "raw aiohttp s", "aiohttp / ideal", "turnout engine s", "turnout / ideal", "turnout / aiohttp"):
        t.add_column(col, justify="right")
    for row in r["rows"]:  # type: ignore[attr-defined]
        t.add_row(f"{row['latency_s'] * 1000:.0f} ms", f"{row['ideal_s']:.2f}", f"{row['aiohttp_wall_s']:.2f}",
                  f"{row['aiohttp_vs_ideal']:.3f}", f"{row['turnout_wall_s']:.2f}", f"{row['turnout_vs_ideal']:.3f}",
                  f"{row['turnout_vs_aiohttp']:.3f}")
    Console().print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="calls per measurement")
    ap.add_argument("--cap", type=int, default=64, help="concurrency cap")
    ap.add_argument("--latency", type=float, default=0.05, help="mock server latency, seconds")
    ap.add_argument("--reps", type=int, default=10, help="repetitions of each client, interleaved")
    ap.add_argument("--only", default="", help="comma-separated client kinds to measure (default: all)")
    ap.add_argument("--sweep", default="", help="comma-separated latencies (s): wall time vs ideal for each")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    if args.sweep:
        r = asyncio.run(sweep_async(args))
        print(json.dumps(r, indent=2)) if args.json else print_sweep(r)
        return
    s = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(s, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"client overhead: {args.n} calls, cap {args.cap}, {args.latency * 1000:.0f} ms latency, {args.reps} reps (medians)")
    for col in ("client", "CPU µs/call", "paired ratio", "wall s", "wall / ideal", "RSS Δ MB", "conns", "retries"):
        t.add_column(col, justify="right" if col != "client" else "left")
    labels = {"aiohttp": "raw aiohttp (baseline)", "adapter-only": "turnout adapter, no policies",
              "turnout": "turnout trace+retry+limit", "sectioning": "same stack via fan-out engine + sectioning",
              "sqlite-trace": "same stack, traced to SQLite", "aiohttp-tools": "raw aiohttp, 5 tools (baseline of the next)",
              "turnout-tools": "turnout stack, 5 tools (vs raw with tools)", "aiohttp-stream": "raw aiohttp, streaming (baseline of the next)",
              "turnout-stream": "turnout stack, streaming (vs raw streaming)",
              "sectioning-sqlite": "fan-out engine + sectioning, traced to SQLite",
              "aiohttp-vote": f"raw aiohttp, {VOTES} samples a question + Counter (baseline of the next)",
              "vote-sqlite": f"turnout vote() of {VOTES}, traced to SQLite (runs + verdicts)"}
    ratio_of = {kind: key for key, (kind, _) in RATIOS.items()}
    for kind in (k for k in labels if k in s):
        r = s[kind]  # type: ignore[index]
        ratio = s.get(ratio_of.get(kind, ""), 1.0)
        t.add_row(labels[kind], f"{r['cpu_us_per_call_median']:.0f}",
                  f"{ratio:.2f}×", f"{r['wall_s_median']:.3f}", f"{r['wall_vs_ideal']:.2f}", f"{r['rss_delta_mb_median']:.1f}",
                  f"{r['connections_median']:.0f}", f"{r['retries_total'] + r['stale_retries_total']:.0f}")
    Console().print(t)
    names = {"ratio_cpu": "turnout stack", "ratio_cpu_adapter_only": "adapter alone", "ratio_cpu_sectioning": "fan-out engine + sectioning",
             "ratio_cpu_sqlite_trace": "traced to SQLite", "ratio_cpu_tools": "with 5 tools", "ratio_cpu_stream": "streaming",
             "ratio_cpu_sectioning_sqlite": "fan-out + sectioning traced to SQLite", "ratio_cpu_vote_sqlite": "vote traced to SQLite"}
    print("CPU per call against raw aiohttp doing the same (target ≤ 1.2×): "
          + "; ".join(f"{names[k]} {s[k]:.3f}×{'' if s[k] <= 1.2 else ' (MISSES)'}" for k in RATIOS if k in s)  # type: ignore[operator]
          + f"; peak RSS {s['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
