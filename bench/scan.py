"""Text scanning on prompts of realistic size: ``scrub`` (every stored row, on the trace writer) and
the compliance ``Detector`` (every request to a compliance-routed model, on the event loop).

Each figure beside its baseline measured in the same run: the same patterns with their gates
removed (each regex run over the whole text, as before gates existed). Texts: ordinary prose; a
support ticket (dates, order numbers, ``key: value`` lines, hyphens — what opens most gates
without holding anything sensitive); the ticket as the JSON messages body a call row stores; the
ticket with a card number and an email in it.

    python bench/scan.py [--chars 8000] [--reps 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

from turnout import _secrets
from turnout.policies import Detector

PROSE = "Please read the following notes carefully and answer the question at the end. "
TICKET = ("Order 48213 (placed 2026-11-02, shipped 2026-11-04) arrived damaged.\nStatus: open - priority: high\n"
          "Customer-reported issue; see ticket_ref in the CRM. Refund = 49.90 EUR. A replacement was promised. ")


def sized(unit: str, chars: int) -> str:
    return (unit * (chars // len(unit) + 1))[:chars]


def per_call_us(fn: Callable[[str], object], text: str, reps: int) -> float:
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(text)
        runs.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chars", type=int, default=8000)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ticket = sized(TICKET, a.chars)
    texts = {"prose": sized(PROSE, a.chars), "ticket": ticket,
             "ticket as JSON": json.dumps([{"role": "user", "content": ticket}]),
             "ticket + card, email": ticket[: a.chars - 60] + " card 4111 1111 1111 1111, mail jane.doe@example.com"}
    gated, ungated = Detector(), Detector()
    ungated.patterns = tuple(replace(p, gate=None) for p in ungated.patterns)

    def scrub_ungated(t: str) -> str:
        return _secrets._SURROGATE.sub("\ufffd", _secrets._SHAPED.sub("[SECRET]", t))

    res: dict[str, dict[str, float]] = {}
    for name, t in texts.items():
        assert gated.scan(t) == ungated.scan(t) and _secrets.clean(t) == scrub_ungated(t)
        r = {"scrub_us": per_call_us(_secrets.clean, t, a.reps), "scrub_ungated_us": per_call_us(scrub_ungated, t, a.reps),
             "detect_us": per_call_us(gated.scan, t, a.reps // 4 or 1),
             "detect_ungated_us": per_call_us(ungated.scan, t, a.reps // 4 or 1)}
        res[name] = {k: round(v, 1) for k, v in r.items()}
    if a.json:
        print(json.dumps({"chars": a.chars, "texts": res}))
        return
    print(f"per text of {a.chars} characters (median of 5 runs); baseline: the same patterns without their gates")
    for name, r in res.items():
        print(f"  {name:22s} scrub {r['scrub_us']:7.1f} us vs {r['scrub_ungated_us']:7.1f} "
              f"({r['scrub_us'] / r['scrub_ungated_us']:.3f}x)   detector {r['detect_us']:7.1f} us vs {r['detect_ungated_us']:7.1f} "
              f"({r['detect_us'] / r['detect_ungated_us']:.3f}x)")


if __name__ == "__main__":
    main()
