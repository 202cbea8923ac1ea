"""Voting value on the embedded LLM: single sample vs fixed-N majority vs adaptive early stopping.

Arithmetic word problems with integer answers are generated from templates (known answers,
deterministic per seed: one-step sums, differences and products, and a two-step kind). The prompt
is a one-shot "calculator": a system line and one worked example (the calculation on one line, then
``Answer: N``), so even the 0.5B model writes its arithmetic before the answer.

For each problem:
- greedy: one answer at temperature 0;
- single: one sample at the sampling temperature (the first of the fixed-N samples);
- fixed-N: N samples (``--temperature``, seeds 100..100+N-1), plurality vote;
- adaptive, live: ``vote()`` with each stopping rule, one sample at a time per problem (two problems
  run at once to fill the model's two slots), counting the calls actually made;
- adaptive, replayed: every rule on the recorded fixed-N sequences (the same samples, no calls).
Target: adaptive ≤ half the samples of fixed N=8 with accuracy within 1 point.

    python bench/voting.py --n 100 [--samples 8] [--model local|local-strong] [--save votes.jsonl] [--json]
    python bench/voting.py --replay votes.jsonl          # re-score recorded votes, no model needed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

from turnout import Message, Request
from turnout.parallel import SAMPLE_SEED, SAMPLE_TEMPERATURE, Vote, VotePrior, extract_number, is_decided, sampler, tally, vote

NAMES = ["Tom", "Ana", "Li", "Sara", "Omar", "Kim", "Ravi", "Eva"]
THINGS = ["apples", "stickers", "marbles", "books", "coins", "pencils"]
SYSTEM = "Solve the word problem. Write the calculation on one line, then the answer on the next line as 'Answer: ' and the number."
EXAMPLE = ("Mia has 14 cards, buys 6 more, then loses 3. How many cards does Mia have now?", "14 + 6 - 3 = 17\nAnswer: 17")
# grade-school problems take several steps: the example shows one per line, and answers get room
GRADE_SYSTEM = ("Solve the word problem step by step: one short calculation per line, then the answer on the last line "
                "as 'Answer: ' and the number.")
GRADE_EXAMPLE = ("A shop sells pens at 3 coins each. Mia buys 4 pens and pays with 20 coins. How many coins does she get back?",
                 "4 pens cost 4 * 3 = 12 coins.\n20 - 12 = 8\nAnswer: 8")
# (label, early_stop mode, level, with the prior fitted on the calibration problems): live and replayed.
# "library default" is vote() as it is called without options: early_stop="decided", waves of 2.
LIVE = [("predictive 0.95", "predictive", 0.95, False), ("predictive 0.95, fitted prior", "predictive", 0.95, True),
        ("library default (decided)", "default", 0.95, False)]
REPLAYED = [("decided (exact)", "decided", 0.95, False), ("beta 0.95", "beta", 0.95, False), ("beta 0.9", "beta", 0.9, False),
            *LIVE[:2], ("predictive 0.99, fitted prior", "predictive", 0.99, True), ("predictive 0.9, fitted prior", "predictive", 0.9, True)]


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
        out.append((q, ans))
    return out


def grade_problems(n: int, seed: int = 7) -> list[tuple[str, int]]:
    """Grade-school word problems of two to four steps (change, rates, equal shares, comparisons),
    integer answers known, deterministic per seed."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        who, other = r.sample(NAMES, 2)
        thing = r.choice(THINGS)
        kind = r.randrange(6)
        if kind == 0:
            c, p = r.randint(2, 9), r.randint(2, 12)
            m = c * p + r.randint(1, 30)
            q, ans = f"{who} buys {c} {thing} at {p} coins each and pays with {m} coins. How many coins does {who} get back?", m - c * p
        elif kind == 1:
            a, d, b = r.randint(5, 25), r.randint(3, 9), r.randint(2, 15)
            q, ans = (f"{who} reads {a} pages every day for {d} days, then {b} more pages on the next day. "
                      f"How many pages does {who} read in total?"), a * d + b
        elif kind == 2:
            c, k, b = r.randint(2, 8), r.randint(3, 12), r.randint(1, 9)
            q, ans = (f"{who} shares {c * k} {thing} equally among {c} bags, then adds {b} more {thing} to each bag. "
                      f"How many {thing} are in each bag now?"), k + b
        elif kind == 3:
            b, c, d, e = r.randint(4, 12), r.randint(2, 6), r.randint(1, 9), r.randint(1, 10)
            q, ans = (f"A box holds {b} {thing}. {who} buys {c} boxes and {d} loose {thing}, then gives {e} {thing} away. "
                      f"How many {thing} does {who} have left?"), b * c + d - e
        elif kind == 4:
            a, k, b = r.randint(3, 15), r.randint(2, 4), r.randint(1, 5)
            q, ans = (f"{who} has {a} {thing}. {other} has {k} times as many as {who}, minus {b}. "
                      f"How many {thing} do {who} and {other} have together?"), a + k * a - b
        else:
            v, h, w, g = r.randint(20, 60), r.randint(2, 5), r.randint(10, 50), r.randint(1, 4)
            q, ans = (f"A train travels {v} km each hour for {h} hours, then {w} km each hour for {g} more hours. "
                      f"How many km does it travel in all?").replace("for 1 more hours", "for 1 more hour"), v * h + w * g
        out.append((q, ans))
    return out


def request(question: str, kind: str = "simple", max_tokens: int = 40) -> Request:
    system, example = (GRADE_SYSTEM, GRADE_EXAMPLE) if kind == "grade" else (SYSTEM, EXAMPLE)
    return Request((Message("system", system), Message("user", example[0]), Message("assistant", example[1]),
                    Message("user", question)), max_tokens=max_tokens)


def problem_set(args: argparse.Namespace, n: int, seed: int = 7) -> list[tuple[str, int]]:
    return grade_problems(n, seed) if args.problems == "grade" else problems(n, seed)


def as_votes(keys: list[str | None]) -> list[Vote]:
    return [Vote(k, k or "", "", 1.0, i) for i, k in enumerate(keys)]


async def record(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Calibrate, then per test problem: greedy, the fixed-N samples and the live adaptive votes."""
    import tempfile

    from turnout import LocalLLM
    from turnout.models import QWEN_05B, QWEN_15B
    from turnout.store import SQLiteStore

    weights = QWEN_15B if args.model == "local-strong" else QWEN_05B
    llm = LocalLLM(weights=weights, name=args.model, parallel=2, context=1024)
    await llm.load()
    slots = asyncio.Semaphore(2)  # two problems at once: the model's two slots; one sample at a time within a vote

    # 1. calibration, as a user would: other problems voted with the uninformed predictive rule inside
    #    store runs (the verdicts land in the trace store), then the prior fitted from the store
    tmp = tempfile.TemporaryDirectory()
    store = SQLiteStore(f"{tmp.name}/calibration.db")

    async def calibrate(question: str) -> int:
        async with slots:
            with store.run("calibration", question):
                v = await vote(sampler(llm, request(question, args.problems, args.max_tokens), temperature=args.temperature, seed=SAMPLE_SEED),
                               args.samples,
                               extract=extract_number, early_stop="predictive", wave=1, name="word-problem")
        return v.samples_used

    cal_used = await asyncio.gather(*(calibrate(q) for q, _ in problem_set(args, args.calibrate, seed=8)))
    store.flush()
    prior = VotePrior.from_store(store, name="word-problem")
    store.close()
    tmp.cleanup()
    calibration = {"problems": args.calibrate, "samples": sum(cal_used), "prior": {"alpha": prior.alpha, "beta": prior.beta,
                   "mean": round(prior.mean, 4)}, "model": args.model, "temperature": args.temperature, "problems_kind": args.problems,
                   "max_tokens": args.max_tokens, "target": args.target}
    saved = open(args.save, "w") if args.save else None  # noqa: SIM115 -- rows are appended as problems finish
    if saved:  # a run cut short keeps every problem it finished: --replay scores the rows written so far
        saved.write(json.dumps({"calibration": calibration}) + "\n")
        saved.flush()

    # 2. the test problems
    live_labels = {"all": [x[0] for x in LIVE], "none": [], "default": [LIVE[-1][0]]}[args.live]
    rules = [(label, mode, level, prior if fitted else None) for label, mode, level, fitted in LIVE if label in live_labels]
    rows: list[dict[str, Any]] = []

    async def one(i: int, question: str, answer: int) -> None:
        req = request(question, args.problems, args.max_tokens)
        async with slots:
            greedy = extract_number((await llm.complete(req.with_(temperature=0.0))).text)
            fixed = await vote(sampler(llm, req, temperature=args.temperature, seed=SAMPLE_SEED), args.samples, extract=extract_number,
                               early_stop=None, wave=1)
            live = {}
            for label, mode, level, pr in rules:
                s = sampler(llm, req, temperature=args.temperature, seed=SAMPLE_SEED)
                if mode == "default":  # vote() with the library's defaults, nothing but the extractor given
                    v = await vote(s, args.samples, extract=extract_number)
                else:
                    v = await vote(s, args.samples, extract=extract_number, early_stop=mode, confidence_level=level, prior=pr,  # type: ignore[arg-type]
                                   wave=1)
                live[label] = {"answer": v.answer, "used": v.samples_used}
        votes = sorted(fixed.votes, key=lambda vt: vt.index)
        rows.append({"i": i, "question": question, "answer": str(answer), "greedy": greedy,
                     "votes": [vt.key for vt in votes], "texts": [vt.raw for vt in votes], "live": live})
        if saved:
            saved.write(json.dumps(rows[-1]) + "\n")
            saved.flush()

    await asyncio.gather(*(one(i, q, a) for i, (q, a) in enumerate(problem_set(args, args.n))))
    if saved:
        saved.close()
    return sorted(rows, key=lambda r: r["i"]), calibration


def score(rows: list[dict[str, Any]], samples: int, prior: VotePrior, target: float = 0.5) -> dict[str, Any]:
    n = len(rows)

    def acc(answers: list[str | None]) -> float:
        return round(sum(a == r["answer"] for a, r in zip(answers, rows, strict=True)) / n, 4)

    out: dict[str, Any] = {
        "problems": n,
        "greedy": {"accuracy": acc([r["greedy"] for r in rows]), "samples": 1.0},
        "single": {"accuracy": acc([r["votes"][0] for r in rows]), "samples": 1.0},
        "fixed": {"accuracy": acc([tally(as_votes(r["votes"])).answer for r in rows]), "samples": float(samples)},
        "live": {}, "replayed": {},
    }
    for label, *_ in LIVE:
        if all(label in r.get("live", {}) for r in rows):
            out["live"][label] = {"accuracy": acc([r["live"][label]["answer"] for r in rows]),
                                  "samples": round(statistics.mean(r["live"][label]["used"] for r in rows), 3)}
    for label, mode, level, fitted in REPLAYED:
        answers, used = [], []
        for r in rows:
            seq = as_votes(r["votes"])
            k = next(j for j in range(1, samples + 1)
                     if j == samples or (j >= 2 and is_decided(seq[:j], samples, mode=mode, level=level, prior=prior if fitted else None)))
            answers.append(tally(seq[:k]).answer)
            used.append(k)
        out["replayed"][label] = {"accuracy": acc(answers), "samples": round(statistics.mean(used), 3)}
    fixed_acc = out["fixed"]["accuracy"]
    for group in ("live", "replayed"):
        for v in out[group].values():
            v["samples_vs_fixed"] = round(v["samples"] / samples, 3)
            v["points_vs_fixed"] = round(100 * (v["accuracy"] - fixed_acc), 1)
            v["meets_target"] = v["samples_vs_fixed"] <= target and v["points_vs_fixed"] >= -1.0
    out["fixed_beats_single"] = out["fixed"]["accuracy"] > out["single"]["accuracy"]
    out["target_samples_vs_fixed"] = target
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="problems")
    ap.add_argument("--samples", type=int, default=8, help="N for the fixed vote (and the adaptive cap)")
    ap.add_argument("--temperature", type=float, default=SAMPLE_TEMPERATURE, help="sampling temperature for the votes (the library default)")
    ap.add_argument("--model", choices=["local", "local-strong"], default="local",
                    help="the embedded 0.5B model, or the 1.5B one (pip install 'turnout[local-strong]')")
    ap.add_argument("--calibrate", type=int, default=40, help="other problems voted first, to fit the stopping prior")
    ap.add_argument("--problems", choices=["simple", "grade"], default="simple",
                    help="simple: one- and two-step sums (the recorded 0.5B runs); grade: grade-school problems of 2-4 steps")
    ap.add_argument("--max-tokens", type=int, default=None, help="room for the working (default: 40 simple, 200 grade)")
    ap.add_argument("--target", type=float, default=None,
                    help="adaptive samples / fixed N to meet (default 0.5 simple — the parallelization issue —, 0.6 grade — issue 19)")
    ap.add_argument("--live", choices=["all", "default", "none"], default="all",
                    help="which adaptive rules also run live (the rest are replayed on the fixed-N votes, the same samples)")
    ap.add_argument("--save", help="write the recorded votes (JSONL) for --replay")
    ap.add_argument("--replay", help="re-score recorded votes; no model is loaded")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.max_tokens = args.max_tokens or (200 if args.problems == "grade" else 40)
    args.target = args.target or (0.6 if args.problems == "grade" else 0.5)
    t0 = time.perf_counter()
    if args.replay:
        with open(args.replay) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        calibration = next(x["calibration"] for x in lines if "calibration" in x)
        rows = [x for x in lines if "calibration" not in x]
        args.samples = len(rows[0]["votes"])
        args.model, args.temperature = calibration.get("model", args.model), calibration.get("temperature", args.temperature)
        args.target = calibration.get("target", args.target)
    else:
        rows, calibration = asyncio.run(record(args))
    prior = VotePrior(calibration["prior"]["alpha"], calibration["prior"]["beta"])
    r = score(rows, args.samples, prior, args.target)
    r.update(model=args.model, temperature=args.temperature, calibration=calibration, wall_s=round(time.perf_counter() - t0, 1))
    if args.json:
        print(json.dumps(r, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"voting on {r['problems']} generated word problems, {r['model']}, N={args.samples} ({r['wall_s']} s)")
    for col in ("strategy", "accuracy", "mean samples", "samples vs fixed N", "points vs fixed N", "target"):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    t.add_row("single sample, temperature 0", f"{r['greedy']['accuracy']:.3f}", "1.00", "", "", "")
    t.add_row("single sample, sampled", f"{r['single']['accuracy']:.3f}", "1.00", "", "", "")
    t.add_row(f"fixed N={args.samples} plurality", f"{r['fixed']['accuracy']:.3f}", f"{args.samples:.2f}", "1.00", "0.0", "")
    for group, name in (("live", "live"), ("replayed", "replayed on the fixed-N votes")):
        for label, v in r[group].items():
            t.add_row(f"adaptive, {name}: {label}", f"{v['accuracy']:.3f}", f"{v['samples']:.2f}", f"{v['samples_vs_fixed']:.2f}",
                      f"{v['points_vs_fixed']:+.1f}", "met" if v["meets_target"] else "not met")
    Console(width=160).print(t)
    cal = r["calibration"]
    print(f"fixed N beats one sample: {'yes' if r['fixed_beats_single'] else 'no'}; target: adaptive <= {r['target_samples_vs_fixed']:g}x "
          "the samples of fixed N within 1 point")
    print(f"prior fitted on {cal['problems']} other problems ({cal['samples']} samples): Beta({cal['prior']['alpha']:g}, "
          f"{cal['prior']['beta']:g}), mean share of a random vote's answer {cal['prior']['mean']:.2f}")


if __name__ == "__main__":
    main()
