"""Cost-quality evaluation of model-routing strategies on a labelled set (``turnout models eval``).

For every item the cheap and the strong model are each asked once at temperature 0, and the cheap
model is sampled ``samples - 1`` times more at ``temperature`` (the cascade's votes are its greedy
answer plus those samples, as in ``EscalationCascade``). The strategies
are then scored from these recorded calls — exactly what each would have done with the same
answers, without paying for the calls again:

- ``always-cheap`` / ``always-strong``: one greedy call to that model;
- ``router``: the complexity router's tier picks cheap (lowest tier) or strong (any higher tier);
- ``random (router mix)`` / ``random (cascade mix)``: cheap or strong at random with the same
  share of strong calls (expected values, so no seed luck);
- ``cascade``: the cheap votes (greedy first, then the samples) one at a time with "decided" early
  stopping; if their agreement reaches the threshold their majority answers, else the strong model
  does (it pays for both).

Costs come from token counts × the prices in force at scoring time, so a saved run can be
re-priced (``--replay``). The cascade's threshold sweep is the cost-quality curve (``--plot``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._errors import ConfigError
from .._types import Price, Request, Usage
from .._yaml import jsonl_objects, load_model
from ..parallel.voting import Vote, extract_number, extract_regex, extract_text, is_decided, normalise_number, tally
from .escalation import CascadeRecord, sweep

__all__ = ["EvalConfig", "collect", "load_eval_config", "load_rows", "score"]


class _PriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class _RouterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field("rules", pattern="^(rules|semantic)$")
    thresholds: list[float] | None = None
    hard_words: str | None = None  # rules: a regex of words that make a request harder (default: a generic list)
    train: str | None = None  # semantic: labelled rows {"text"|"question", "tier"}


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cheap: str = "local"
    strong: str = "local-strong"
    catalog: str | None = None
    prices: dict[str, _PriceIn] = {}
    prompt: str = "{question}"
    system: str | None = None
    max_tokens: int = Field(16, gt=0)
    check: str = "number"  # number | exact | contains | regex:<pattern>
    samples: int = Field(3, ge=2)
    temperature: float = Field(0.7, ge=0)
    threshold: float = Field(0.6, ge=0, le=1)
    router: _RouterIn = _RouterIn()
    seed: int = 1000

    def checker(self) -> Callable[[str], str | None]:
        if self.check == "number":
            return extract_number
        if self.check in ("exact", "contains"):
            return extract_text
        if self.check.startswith("regex:"):
            return extract_regex(self.check[6:])
        raise ConfigError(f"check: use number, exact, contains or regex:<pattern>, not {self.check!r}")

    def correct(self, text: str, answer: Any) -> bool:
        if self.check == "contains":
            return str(answer).strip().lower() in (text or "").lower()
        got = self.checker()(text)
        want = normalise_number(str(answer)) if self.check == "number" else extract_text(str(answer))
        return got is not None and got == want


def load_eval_config(path: str | Path) -> EvalConfig:
    p = Path(path)
    cfg, _ = load_model(p, EvalConfig, what="eval config", hint="an eval config is a mapping (cheap, strong, prompt, check, samples, ...)")
    if cfg.catalog is not None and not Path(cfg.catalog).is_absolute():
        cfg.catalog = str(p.parent / cfg.catalog)
    if cfg.router.train is not None and not Path(cfg.router.train).is_absolute():
        cfg.router.train = str(p.parent / cfg.router.train)
    try:
        cfg.checker()
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    if "{question}" not in cfg.prompt:
        raise ConfigError(f"{p}: prompt: needs {{question}}")
    return cfg


def load_rows(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    for n, r in jsonl_objects(path):
        if "question" not in r or "answer" not in r:
            raise ConfigError(f"{path}:{n}: each line needs \"question\" and \"answer\"")
        rows.append(r)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


# -- collecting -------------------------------------------------------------------------------------
def _call(c: Any) -> dict[str, Any]:
    return {"text": c.text, "in": c.usage.input_tokens, "out": c.usage.output_tokens, "s": round(c.latency_s, 4)}


async def collect(cfg: EvalConfig, rows: Sequence[Mapping[str, Any]], catalog: Any, router: Any,
                  progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Ask the models: per item one greedy cheap call, one greedy strong call, ``samples`` cheap samples."""
    cheap, strong = catalog.model(cfg.cheap), catalog.model(cfg.strong)
    out = []
    for i, r in enumerate(rows):
        q = cfg.prompt.replace("{question}", str(r["question"]))
        req = Request.of(q, system=cfg.system, max_tokens=cfg.max_tokens, temperature=0.0, seed=cfg.seed)
        tier = await router.decide(str(r["question"]))
        lowest = router.route_names[0]
        g_cheap = await cheap.complete(req)
        g_strong = await strong.complete(req)
        samples = await asyncio.gather(*(cheap.complete(req.with_(temperature=cfg.temperature, seed=cfg.seed + 1 + j))
                                         for j in range(cfg.samples - 1)))
        out.append({"question": r["question"], "answer": r["answer"], "tier": tier.route,
                    "routed_to": cfg.cheap if tier.route == lowest else cfg.strong, "cheap": _call(g_cheap),
                    "strong": _call(g_strong), "samples": [_call(s) for s in samples]})
        if progress is not None:
            progress(i + 1)
    return out


# -- scoring ----------------------------------------------------------------------------------------
@dataclass
class Strategy:
    name: str
    accuracy: float
    cost_usd: float  # per item
    seconds: float  # model time per item
    share: dict[str, float] = field(default_factory=dict)  # share of calls per model

    def row(self, strong: Strategy) -> dict[str, Any]:
        return {"strategy": self.name, "accuracy": round(self.accuracy, 4),
                "accuracy_vs_strong": round(self.accuracy / strong.accuracy, 4) if strong.accuracy else None,
                "cost_usd": self.cost_usd, "cost_vs_strong": round(self.cost_usd / strong.cost_usd, 4) if strong.cost_usd else None,
                "seconds": round(self.seconds, 3), "share": {k: round(v, 4) for k, v in self.share.items()}}


def _cost(call: Mapping[str, Any], price: Price) -> float:
    return price.cost(Usage(int(call["in"]), int(call["out"])))


def _cascade(cfg: EvalConfig, rec: Mapping[str, Any]) -> tuple[float, str | None, str, int]:
    """Replay the cheap samples one at a time with "decided" stopping: (agreement, answer, its text, used)."""
    ext = cfg.checker()
    calls = [rec["cheap"], *rec["samples"][: cfg.samples - 1]]  # vote 0 is the greedy answer, as in EscalationCascade
    votes = [Vote(ext(s["text"]), s["text"], cfg.cheap, 1.0, j) for j, s in enumerate(calls)]
    k = len(votes)
    used = next((j for j in range(2, k + 1) if is_decided(votes[:j], k)), k)
    v = tally(votes[:used])
    if v.answer is None:
        return 0.0, None, "", used
    return v.agreement, v.answer, next(x.raw for x in votes[:used] if x.key == v.answer), used


def outcomes(cfg: EvalConfig, records: Sequence[Mapping[str, Any]], prices: Mapping[str, Price]) -> list[CascadeRecord]:
    out = []
    for rec in records:
        agreement, answer, raw, used = _cascade(cfg, rec)
        calls = [rec["cheap"], *rec["samples"]]
        out.append(CascadeRecord(agreement, answer is not None and cfg.correct(raw, rec["answer"]),
                           sum(_cost(s, prices[cfg.cheap]) for s in calls[:used]),
                           cfg.correct(rec["strong"]["text"], rec["answer"]), _cost(rec["strong"], prices[cfg.strong])))
    return out


def score(cfg: EvalConfig, records: Sequence[Mapping[str, Any]], prices: Mapping[str, Price],
          threshold: float | None = None) -> dict[str, Any]:
    """Every strategy's accuracy, cost, model time and call shares, plus the cascade's threshold curve."""
    if not records:
        raise ConfigError("no records to score")
    n = len(records)
    th = cfg.threshold if threshold is None else threshold
    pc, ps = prices[cfg.cheap], prices[cfg.strong]
    c_ok = [cfg.correct(r["cheap"]["text"], r["answer"]) for r in records]
    s_ok = [cfg.correct(r["strong"]["text"], r["answer"]) for r in records]
    c_cost = [_cost(r["cheap"], pc) for r in records]
    s_cost = [_cost(r["strong"], ps) for r in records]
    c_s = [r["cheap"]["s"] for r in records]
    s_s = [r["strong"]["s"] for r in records]
    to_strong = [r["routed_to"] == cfg.strong for r in records]

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / n

    cheap = Strategy("always-cheap", mean(c_ok), mean(c_cost), mean(c_s), {cfg.cheap: 1.0})
    strong = Strategy("always-strong", mean(s_ok), mean(s_cost), mean(s_s), {cfg.strong: 1.0})
    p = sum(to_strong) / n
    router = Strategy("router", mean([s if h else c for c, s, h in zip(c_ok, s_ok, to_strong, strict=True)]),
                      mean([s if h else c for c, s, h in zip(c_cost, s_cost, to_strong, strict=True)]),
                      mean([s if h else c for c, s, h in zip(c_s, s_s, to_strong, strict=True)]), {cfg.cheap: 1 - p, cfg.strong: p})

    def random_mix(q: float, label: str) -> Strategy:
        return Strategy(label, (1 - q) * cheap.accuracy + q * strong.accuracy, (1 - q) * cheap.cost_usd + q * strong.cost_usd,
                        (1 - q) * cheap.seconds + q * strong.seconds, {cfg.cheap: 1 - q, cfg.strong: q})

    outs = outcomes(cfg, records, prices)
    used_s, esc, acc, cost, calls_c = [], 0, 0.0, 0.0, 0
    for rec, o in zip(records, outs, strict=True):
        used = _cascade(cfg, rec)[3]
        secs = sum(s["s"] for s in [rec["cheap"], *rec["samples"]][:used])
        calls_c += used
        if o.agreement >= th - 1e-9:
            acc += o.cheap_correct
            cost += o.cheap_cost
        else:
            esc += 1
            acc += o.strong_correct
            cost += o.cheap_cost + o.strong_cost
            secs += rec["strong"]["s"]
        used_s.append(secs)
    cascade = Strategy(f"cascade (k={cfg.samples}, t={th:g})", acc / n, cost / n, mean(used_s),
                       {cfg.cheap: calls_c / (calls_c + esc), cfg.strong: esc / (calls_c + esc)})
    q = esc / n
    strategies = [cheap, strong, router, random_mix(p, "random (router mix)"), cascade, random_mix(q, "random (cascade mix)")]
    return {
        "n": n, "cheap": cfg.cheap, "strong": cfg.strong, "threshold": th, "escalation_rate": q,
        "prices": {k: {"input": v.input_per_m, "output": v.output_per_m} for k, v in prices.items() if k in (cfg.cheap, cfg.strong)},
        "strategies": [s.row(strong) for s in strategies],
        "curve": sweep(outs),
    }


def plot(result: Mapping[str, Any], path: str | Path) -> None:
    """Cost (per item, relative to always-strong) vs accuracy: the cascade's threshold curve and each strategy."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'turnout[plot]'") from None
    strong = next(s for s in result["strategies"] if s["strategy"] == "always-strong")
    base = strong["cost_usd"] or 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p["cost_usd"] / base for p in result["curve"]]
    ys = [p["accuracy"] for p in result["curve"]]
    ax.plot(xs, ys, "-o", ms=3, color="#4477aa", label="cascade, threshold swept")
    for s in result["strategies"]:
        ax.plot(s["cost_usd"] / base, s["accuracy"], "s", ms=7, label=s["strategy"])
    ax.axhline(0.95 * strong["accuracy"], color="#999", ls=":", lw=1, label="95% of strong accuracy")
    ax.axvline(0.5, color="#bbb", ls="--", lw=1, label="50% of strong cost")
    ax.set_xlabel("cost per item / always-strong cost")
    ax.set_ylabel("accuracy")
    ax.set_title(f"cost vs quality: {result['cheap']} -> {result['strong']} (n={result['n']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

