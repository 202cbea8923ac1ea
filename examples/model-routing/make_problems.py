"""Generate arithmetic word problems with known integer answers: half one-step ("easy"), half
two-step ("hard"). Deterministic per seed.

    python examples/model-routing/make_problems.py --n 80 > examples/model-routing/problems.jsonl
"""

from __future__ import annotations

import argparse
import json
import random

NAMES = ["Tom", "Ana", "Li", "Sara", "Omar", "Kim", "Ravi", "Eva", "Noor", "Jon"]
THINGS = ["apples", "stickers", "marbles", "books", "coins", "pencils", "cards", "shells"]


def easy(r: random.Random) -> tuple[str, int]:
    who, thing = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(3, 30), r.randint(2, 20)
    k = r.randrange(3)
    if k == 0:
        return f"{who} has {a} {thing} and gets {b} more. How many {thing} does {who} have?", a + b
    if k == 1:
        return f"{who} has {a + b} {thing} and gives away {b}. How many {thing} are left?", a
    c = r.randint(2, 9)
    return f"{who} buys {c} bags with {b} {thing} in each bag. How many {thing} is that?", b * c


def hard(r: random.Random) -> tuple[str, int]:
    who, friend, thing = r.choice(NAMES), r.choice(NAMES), r.choice(THINGS)
    a, b, c = r.randint(3, 9), r.randint(4, 12), r.randint(5, 25)
    k = r.randrange(3)
    if k == 0:
        return (f"{who} buys {a} boxes of {thing} with {b} in each box, then gives {c} of them to {friend}. "
                f"How many {thing} does {who} have left?"), a * b - c
    if k == 1:
        return (f"{who} has {c + 10} {thing}, gets {a} more from {friend}, and then loses {b}. "
                f"How many {thing} does {who} have now?"), c + 10 + a - b
    return (f"{who} has {c} {thing}. {friend} has {a} times as many {thing} as {who}. "
            f"How many {thing} do they have together?"), c + a * c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=80)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    r = random.Random(args.seed)
    out = []
    while len(out) < args.n:
        tier = "easy" if len(out) % 2 == 0 else "hard"
        q, ans = (easy if tier == "easy" else hard)(r)
        if ans is None or ans < 0:
            continue
        out.append({"question": q, "answer": ans, "tier": tier})
    for row in out:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
