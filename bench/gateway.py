"""Gateway overhead: the same chat requests sent straight to the mock upstream and through
``turnout serve`` (in front of that upstream), in the same run, on loopback.

Starts the mock upstream (``turnout.testing.mockserver``, latency ``--latency``) and a gateway
(``turnout serve --no-auth`` by default, or with a key: ``--auth``) as separate processes. Then,
for each target (direct, gateway):

- open loop: requests started at a fixed ``--rate`` per second for ``--seconds`` (bounded), latency
  of each measured from its scheduled start: p50 / p99 and the achieved rate;
- closed loop: ``--n`` requests at concurrency ``--cap`` as fast as they go: max sustained req/s.

A third target, measured in the same run, is the floor for any Python proxy on this machine: a
20-line raw-ASGI pass-through on the same uvicorn + aiohttp (no parsing, no auth, no tracing).
Prints the added latency (target − direct, p50 and p99) and the throughput ratios. Target: ≤ 1 ms
added p50 at 500 req/s (LiteLLM's docs report 12 ms median overhead for their proxy).

    python bench/gateway.py [--rate 500 --seconds 5 --n 2000 --cap 64 --latency 0.02] [--stream] [--prompt-chars 8000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "hello gateway, please answer"}], "max_tokens": 8})


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mock(latency: float) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "turnout.testing.mockserver", "--port", "0", "--latency", str(latency)],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline() if p.stdout else ""
    if not line.startswith("READY "):
        raise SystemExit(f"mock server did not start: {line!r}")
    return p, f"http://127.0.0.1:{int(line.split()[1])}"


def start_gateway(upstream: str, tmp: Path, auth: bool, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str, str | None]:
    (tmp / "models.yaml").write_text(f"models:\n  mock: {{adapter: openai, base_url: '{upstream}/v1', policies: {{retry: {{attempts: 1}}}}}}\n")
    secret = None
    if auth:
        out = subprocess.run([sys.executable, "-m", "turnout", "keys", "create", "bench", "-m", "mock", "--db", str(tmp / "gw.db")],
                             capture_output=True, text=True, check=True)
        secret = out.stdout.strip()
    port = free_port()
    args = [sys.executable, "-m", "turnout", "serve", "--port", str(port), "--catalog", str(tmp / "models.yaml"), "--db", str(tmp / "gw.db")]
    if not auth:
        args.append("--no-auth")
    args += extra
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(300):
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return p, base, secret
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit("gateway did not start")


def serve_minimal_proxy(port: int, upstream: str) -> None:
    """The baseline: a raw ASGI pass-through (what any Python proxy on uvicorn + aiohttp costs at least)."""
    import uvicorn

    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                if m["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        s = state.get("s") or state.setdefault("s", aiohttp.ClientSession())
        async with s.post(upstream + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}) as r:
            if r.content_type == "text/event-stream":  # a stream: passed on chunk by chunk, as it comes
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
                async for chunk in r.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await r.read()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_minimal_proxy(upstream: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    p = subprocess.Popen([sys.executable, __file__, "--serve-minimal-proxy", str(port), upstream],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(300):
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return p, base
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit("minimal proxy did not start")


async def one(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    async with session.post(url, data=BODY, headers=headers) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")


async def open_loop(url: str, headers: dict[str, str], rate: float, seconds: float) -> dict[str, float]:
    n = int(rate * seconds)
    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        await one(s, url, headers)  # warm the connection pool
        t0 = time.perf_counter()

        async def fire(i: int) -> None:
            nonlocal errors
            start = t0 + i / rate
            delay = start - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await one(s, url, headers)
                lat.append(time.perf_counter() - start)
            except Exception:  # noqa: BLE001 - counted
                errors += 1

        await asyncio.gather(*(fire(i) for i in range(n)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {"p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1], "achieved_rps": len(lat) / wall,
            "errors": errors}


async def closed_loop(url: str, headers: dict[str, str], n: int, cap: int) -> dict[str, float]:
    q = iter(range(n))
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        await one(s, url, headers)
        t0 = time.perf_counter()

        async def worker() -> None:
            for _ in q:
                await one(s, url, headers)

        await asyncio.gather(*(worker() for _ in range(cap)))
        wall = time.perf_counter() - t0
    return {"rps": n / wall}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    mock, upstream = start_mock(args.latency)
    tmp = Path(tempfile.mkdtemp(prefix="turnout-bench-"))
    gw, base, secret = start_gateway(upstream, tmp, args.auth)
    # the same gateway without its access log (on by default): what the log line per request costs
    quiet_tmp = Path(tempfile.mkdtemp(prefix="turnout-bench-quiet-"))
    gq, qbase, qsecret = start_gateway(upstream, quiet_tmp, args.auth, ("--no-access-log",))
    px, pbase = start_minimal_proxy(upstream)
    try:
        hdr = {"Content-Type": "application/json"}
        targets = {
            "direct": (upstream + "/v1/chat/completions", hdr),
            "minimal-proxy": (pbase + "/v1/chat/completions", hdr),
            "gateway": (base + "/v1/chat/completions", {**hdr, **({"Authorization": f"Bearer {secret}"} if secret else {})}),
            "gateway-no-log": (qbase + "/v1/chat/completions", {**hdr, **({"Authorization": f"Bearer {qsecret}"} if qsecret else {})}),
        }
        res: dict[str, object] = {"rate": args.rate, "seconds": args.seconds, "latency_s": args.latency, "auth": args.auth,
                                  "stream": args.stream}
        reps: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
        for _ in range(args.reps):  # interleaved, so drift on the shared machine hits all alike
            for k, (url, h) in targets.items():
                reps[k].append(await open_loop(url, h, args.rate, args.seconds))

        def med(k: str, f: str) -> float:
            return statistics.median(r[f] for r in reps[k])

        res["open_loop"] = {k: {f: round(med(k, f), 3) for f in reps[k][0]} for k in targets}
        for k in ("minimal-proxy", "gateway", "gateway-no-log"):
            res[f"added_p50_ms_{k}"] = round(med(k, "p50_ms") - med("direct", "p50_ms"), 3)
            res[f"added_p99_ms_{k}"] = round(med(k, "p99_ms") - med("direct", "p99_ms"), 3)
        res["added_p50_ms"], res["added_p99_ms"] = res["added_p50_ms_gateway"], res["added_p99_ms_gateway"]
        runs: dict[str, list[float]] = {k: [] for k in targets}
        # the CPU each proxy process spends per request in the closed loop (its threads included: the
        # gateway's trace writer is part of its cost); the mock upstream's is the same work for every target
        pids = {"direct": mock.pid, "minimal-proxy": px.pid, "gateway": gw.pid, "gateway-no-log": gq.pid}
        cpu: dict[str, list[float]] = {k: [] for k in targets}
        for rep in range(args.reps):  # interleaved, the order turned each time: drift hits every target alike
            for k, (url, h) in (list(targets.items()) if rep % 2 == 0 else list(targets.items())[::-1]):
                c0 = cpu_s(pids[k])
                runs[k].append((await closed_loop(url, h, args.n, args.cap))["rps"])
                cpu[k].append((cpu_s(pids[k]) - c0) / (args.n + 1) * 1e6)
        rps = {k: statistics.median(v) for k, v in runs.items()}
        res["cpu_us_per_request"] = {k: round(statistics.median(v), 1) for k, v in cpu.items()}
        res["cpu_gateway_vs_minimal_proxy"] = round(statistics.median(
            g / m for g, m in zip(cpu["gateway"], cpu["minimal-proxy"], strict=True)), 3)
        res["closed_loop"] = {"direct_rps": round(rps["direct"], 1), "minimal_proxy_rps": round(rps["minimal-proxy"], 1),
                              "gateway_rps": round(rps["gateway"], 1), "gateway_vs_direct": round(rps["gateway"] / rps["direct"], 3),
                              "gateway_vs_minimal_proxy": round(rps["gateway"] / rps["minimal-proxy"], 3),
                              "gateway_no_log_rps": round(rps["gateway-no-log"], 1),
                              "access_log_cost": round(1 - rps["gateway"] / rps["gateway-no-log"], 3)}
        if args.workers_redis:  # 1 worker vs 2 (both on Redis, so only the process count differs), interleaved
            res["workers"] = await _workers(upstream, args)
        return res
    finally:
        for p in (gw, gq, px, mock):
            p.terminate()
            p.wait(timeout=10)


async def _workers(upstream: str, args: argparse.Namespace) -> dict[str, float]:
    procs, urls = [], {}
    try:
        for w in (1, 2):
            p, base, secret = start_gateway(upstream, Path(tempfile.mkdtemp(prefix=f"turnout-bench-w{w}-")), args.auth,
                                            ("--redis", args.workers_redis, "--workers", str(w)))
            procs.append(p)
            urls[w] = (base + "/v1/chat/completions",
                       {"Content-Type": "application/json", **({"Authorization": f"Bearer {secret}"} if secret else {})})
        await asyncio.sleep(2.0)  # uvicorn's supervisor answers before both workers listen; a start-up pause, not a measurement
        rps: dict[int, list[float]] = {1: [], 2: []}
        for rep in range(args.reps):
            for w in ((1, 2) if rep % 2 == 0 else (2, 1)):
                rps[w].append((await closed_loop(*urls[w], args.n, args.cap))["rps"])
        one_, two = statistics.median(rps[1]), statistics.median(rps[2])
        return {"rps_1_worker": round(one_, 1), "rps_2_workers": round(two, 1), "scaling": round(two / one_, 3)}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--cap", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--auth", action="store_true", help="Send a virtual key (auth + limits on the path).")
    ap.add_argument("--stream", action="store_true", help="Streaming requests (SSE) instead of JSON ones.")
    ap.add_argument("--workers-redis", default=None, metavar="URL",
                    help="Also measure closed-loop throughput with 1 and 2 gateway workers (turnout serve --workers, on this Redis).")
    ap.add_argument("--prompt-chars", type=int, default=0, metavar="N",
                    help="Pad the user message with ordinary prose to N characters (a realistic prompt: the gateway "
                         "traces and scrubs it).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global BODY
    if args.prompt_chars:
        prose = "Please read the following notes carefully and answer the question at the end. " * (args.prompt_chars // 80 + 1)
        BODY = json.dumps({**json.loads(BODY), "messages": [{"role": "user", "content": prose[:args.prompt_chars]}]})
    if args.stream:
        BODY = json.dumps({**json.loads(BODY), "stream": True})
    res = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(res))
        return
    ol = res["open_loop"]
    print(f"open loop at {args.rate:g} req/s for {args.seconds:g}s (median of {args.reps}), upstream latency {args.latency * 1000:g} ms:")
    for k, v in ol.items():  # type: ignore[union-attr]
        print(f"  {k:14s} p50 {v['p50_ms']:8.2f} ms   p99 {v['p99_ms']:8.2f} ms   achieved {v['achieved_rps']:7.1f} req/s   "
              f"errors {v['errors']:g}")
    print(f"  added p50 / p99: minimal proxy {res['added_p50_ms_minimal-proxy']} / {res['added_p99_ms_minimal-proxy']} ms, "
          f"turnout gateway {res['added_p50_ms']} / {res['added_p99_ms']} ms (target: <= 1 ms p50 at 500 req/s)")
    cl = res["closed_loop"]
    print(f"closed loop, {args.n} requests at concurrency {args.cap}: direct {cl['direct_rps']} req/s, "  # type: ignore[index]
          f"minimal proxy {cl['minimal_proxy_rps']}, gateway {cl['gateway_rps']} "  # type: ignore[index]
          f"({cl['gateway_vs_minimal_proxy']}x the minimal proxy); without the access log {cl['gateway_no_log_rps']} req/s "  # type: ignore[index]
          f"(the log costs {cl['access_log_cost']:.1%} of throughput)")  # type: ignore[index]
    c = res["cpu_us_per_request"]
    print(f"server CPU per request in the closed loop: mock upstream (direct) {c['direct']} µs, "  # type: ignore[index]
          f"minimal proxy {c['minimal-proxy']} µs, gateway {c['gateway']} µs "  # type: ignore[index]
          f"({res['cpu_gateway_vs_minimal_proxy']}x the minimal proxy, paired), without the access log {c['gateway-no-log']} µs")  # type: ignore[index]
    if "workers" in res:
        w = res["workers"]
        print(f"workers (closed loop, on Redis): 1 worker {w['rps_1_worker']} req/s, 2 workers {w['rps_2_workers']} req/s "  # type: ignore[index]
              f"({w['scaling']}x)")  # type: ignore[index]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-minimal-proxy":
        serve_minimal_proxy(int(sys.argv[2]), sys.argv[3])
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        main()
