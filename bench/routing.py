"""Routing speed: rule decisions, semantic overhead beyond the encoder, single-query and batch.

Each figure is printed beside a baseline measured in the same run:
- rule routing vs a hand-written ``if any(word in text)`` keyword router;
- semantic routing vs the bare encoder call (what any embedding router must pay), so the
  difference is turnout's own overhead (target ≤ 30 µs p50);
- batch routing vs the bare batched encoder call.

    python bench/routing.py [--n 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import numpy as np

from turnout import LocalEmbedder
from turnout.routing import build_router, load_jsonl, load_spec

SUPPORT = Path(__file__).resolve().parents[1] / "examples" / "support"


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def time_each(fn, items, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        for x in items:
            t0 = time.perf_counter()
            fn(x)
            out.append(time.perf_counter() - t0)
    return out


async def main_async(n: int) -> dict[str, object]:
    spec = load_spec(SUPPORT / "router.yaml")
    texts = [r.input if isinstance(r.input, str) else r.input["text"] for r in load_jsonl(SUPPORT / "test.jsonl")]
    res: dict[str, object] = {}

    # -- rules -------------------------------------------------------------------------------
    rule = build_router(spec.model_copy(update={"router": "rule"}))
    words = {name: [k.lower() for k in r.keywords] for name, r in spec.routes.items() if r.keywords}

    def naive(text: str) -> str | None:
        low = text.lower()
        for name, ws in words.items():
            if any(w in low for w in ws):
                return name
        return None

    reps = max(1, n // len(texts))
    t_rule = time_each(rule.decide_sync, texts, reps)  # type: ignore[attr-defined]
    t_naive = time_each(naive, texts, reps)
    res["rule_p50_us"] = pct(t_rule, 50) * 1e6
    res["rule_p99_us"] = pct(t_rule, 99) * 1e6
    res["naive_keyword_p50_us"] = pct(t_naive, 50) * 1e6
    res["rule_vs_naive"] = res["rule_p50_us"] / res["naive_keyword_p50_us"]  # type: ignore[operator]

    # -- semantic ------------------------------------------------------------------------------
    emb = LocalEmbedder()
    sem = build_router(spec.model_copy(update={"router": "semantic"}), embedder=emb)
    await sem.prepare(warm=True)  # type: ignore[attr-defined]
    q = texts[: min(len(texts), 200)]
    vecs = emb.embed_sync(q)
    t_over = []
    for _ in range(max(1, n // len(q))):
        for v in vecs:
            t0 = time.perf_counter()
            sem._decide_row(sem.score_matrix(v[None, :])[0], t0)  # type: ignore[attr-defined]
            t_over.append(time.perf_counter() - t0)
    res["semantic_overhead_p50_us"] = pct(t_over, 50) * 1e6
    res["semantic_overhead_p99_us"] = pct(t_over, 99) * 1e6
    short = [t for t in texts if len(t.split()) <= 8]
    for label, qs in (("", q), ("short_", short)):
        t_enc, t_aenc, t_e2e = [], [], []
        for x in qs:  # interleaved: the encoder alone (sync, and through its async door), then the whole decision
            t0 = time.perf_counter()
            emb.embed_sync([x])
            t_enc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await emb.embed([x])
            t_aenc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await sem.decide(x)
            t_e2e.append(time.perf_counter() - t0)
        res[f"{label}encoder_only_p50_ms"] = pct(t_enc, 50) * 1e3
        res[f"{label}encoder_async_p50_ms"] = pct(t_aenc, 50) * 1e3  # what any async router pays for the encoder
        # the router's own cost per query: each decision minus the async encoder call just before it
        res[f"{label}semantic_beyond_async_encoder_p50_us"] = pct([e - a for e, a in zip(t_e2e, t_aenc, strict=True)], 50) * 1e6
        res[f"{label}semantic_single_p50_ms"] = pct(t_e2e, 50) * 1e3
        res[f"{label}semantic_single_p99_ms"] = pct(t_e2e, 99) * 1e3
        batch = (qs * (400 // len(qs) + 1))[:400]
        tb, tr = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            emb.embed_sync(batch)
            tb.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await sem.decide_many(batch)
            tr.append(time.perf_counter() - t0)
        res[f"{label}encoder_batch_qps"] = 400 / statistics.median(tb)
        res[f"{label}semantic_batch_qps"] = 400 / statistics.median(tr)
    res["short_queries"] = len(short)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="decisions per timing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = asyncio.run(main_async(args.n))
    if args.json:
        print(json.dumps(r, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="routing speed (p50 unless noted)", title_justify="left")
    for col in ("what", "turnout", "baseline (same run)", "target"):
        t.add_column(col)
    t.add_row("rule decision", f"{r['rule_p50_us']:.2f} µs (p99 {r['rule_p99_us']:.1f})",
              f"hand-written keyword if: {r['naive_keyword_p50_us']:.2f} µs", "≤ 5 µs")
    t.add_row("semantic overhead beyond the encoder", f"{r['semantic_overhead_p50_us']:.1f} µs (p99 {r['semantic_overhead_p99_us']:.1f})",
              "-", "≤ 30 µs")
    for label, what in (("", "support messages"), ("short_", "short queries (≤ 8 words)")):
        t.add_row(f"semantic single query beyond the async encoder, {what}", f"{r[label + 'semantic_beyond_async_encoder_p50_us']:.1f} µs",
                  f"encoder via its async door {r[label + 'encoder_async_p50_ms']:.2f} ms, sync {r[label + 'encoder_only_p50_ms']:.2f} ms",
                  "≤ 30 µs")
        t.add_row(f"semantic single query, {what}", f"{r[label + 'semantic_single_p50_ms']:.2f} ms (p99 {r[label + 'semantic_single_p99_ms']:.2f})",
                  f"encoder alone: {r[label + 'encoder_only_p50_ms']:.2f} ms", "≤ 6 ms")
        t.add_row(f"semantic batch of 400, {what}", f"{r[label + 'semantic_batch_qps']:.0f} queries/s",
                  f"encoder alone: {r[label + 'encoder_batch_qps']:.0f}/s", "≥ 400/s")
    Console().print(t)


if __name__ == "__main__":
    main()
