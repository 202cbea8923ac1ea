"""Local vs Ray backend on one machine, for a CPU-light, latency-bound batch.

The same workflow (one model call per item) over ``--n`` items against the mock upstream (latency
``--latency`` s) in its own process: once with the local runner at concurrency ``--cap``, once on
a local Ray runtime with ``--workers`` actors × ``--cap / workers`` items each (same total
concurrency). Reports the wall time of each (Ray's and the actors' start-up reported apart), the ideal
ceil(n / cap) × latency, and the Ray/local ratio — they should be close: Ray pays for actor
start-up and a remote hop per item and per model call (the cluster-wide gate), and wins only
when one machine's CPU or network is the limit.

    python bench/ray_batch.py [--n 200 --cap 16 --workers 2 --latency 0.2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--cap", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray

    from turnout.policies.catalog import Catalog
    from turnout.store import SQLiteStore
    from turnout.workflows import Workflow
    from turnout.workflows.batch import read_items, run_batch
    from turnout.workflows.ray_backend import run_batch_ray

    mock = subprocess.Popen([sys.executable, "-m", "turnout.testing.mockserver", "--port", "0", "--latency", str(args.latency)],
                            stdout=subprocess.PIPE, text=True)
    line = mock.stdout.readline() if mock.stdout else ""
    url = f"http://127.0.0.1:{int(line.split()[1])}/v1"
    tmp = Path(tempfile.mkdtemp(prefix="turnout-raybench-"))
    try:
        (tmp / "models.yaml").write_text(f"models:\n  m: {{adapter: openai, base_url: '{url}', policies: {{retry: {{attempts: 1}}}}}}\n")
        (tmp / "wf.yaml").write_text("name: b\ndefault_model: m\nsteps:\n  - call: {prompt: 'Say: {input}', max_tokens: 8}\n")
        (tmp / "in.jsonl").write_text("".join(json.dumps({"id": str(k), "input": f"item {k}"}) + "\n" for k in range(args.n)))
        items, _ = read_items(tmp / "in.jsonl")

        store = SQLiteStore(tmp / "local.db")
        wf = Workflow.load(tmp / "wf.yaml", catalog=Catalog.load(tmp / "models.yaml"))
        async def local() -> None:
            try:
                await run_batch(wf, items, store=store, batch_id="local", concurrency=args.cap)
            finally:
                await wf.aclose()

        t0 = time.perf_counter()
        asyncio.run(local())
        local_s = time.perf_counter() - t0
        store.close()

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        start_s = time.perf_counter() - t0
        store = SQLiteStore(tmp / "ray.db")
        t0 = time.perf_counter()
        summary, stats = run_batch_ray(tmp / "wf.yaml", items, store=store, store_target=str(tmp / "ray.db"), batch_id="ray",
                                       catalog_path=tmp / "models.yaml", workers=args.workers,
                                       per_worker=max(1, args.cap // args.workers))
        ray_total = time.perf_counter() - t0
        actors_s = stats["startup_s"]
        ray_s = ray_total - actors_s
        store.close()
        ray.shutdown()
    finally:
        mock.terminate()
        mock.wait(timeout=10)
    ideal = math.ceil(args.n / args.cap) * args.latency
    res = {"n": args.n, "cap": args.cap, "workers": args.workers, "latency_s": args.latency, "ideal_s": round(ideal, 3),
           "local_s": round(local_s, 3), "ray_s": round(ray_s, 3), "ray_start_s": round(start_s, 3), "ray_actors_start_s": round(actors_s, 3),
           "ray_vs_local": round(ray_s / local_s, 3), "local_vs_ideal": round(local_s / ideal, 3), "ray_done": summary.done}
    if args.json:
        print(json.dumps(res))
        return
    print(f"{args.n} items, concurrency {args.cap}, upstream latency {args.latency * 1000:g} ms (ideal {ideal:.2f} s):")
    print(f"  local runner        {local_s:6.2f} s  ({local_s / ideal:.2f}x ideal)")
    print(f"  ray ({args.workers} workers)     {ray_s:6.2f} s  ({ray_s / ideal:.2f}x ideal; {ray_s / local_s:.2f}x local) "
          f"+ {actors_s:.1f} s to start the worker actors + {start_s:.1f} s to start the local Ray runtime")


if __name__ == "__main__":
    main()
