"""``turnout models eval``: collection with fake models, scoring of every strategy, the curve, the CLI."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from turnout import Catalog, ConfigError, ModelSpec, Price
from turnout.cli import app
from turnout.models.catalog import PolicySpec
from turnout.routing import ComplexityRules
from turnout.routing.model_eval import EvalConfig, collect, load_eval_config, score
from turnout.testing import FunctionModel

ROWS = [{"question": f"What is {i} + 1?", "answer": i + 1, "tier": "easy"} for i in range(6)]
ROWS += [{"question": f"Analyze step by step: each of {i} boxes holds 3, then 2 are lost, then half remain. Total? Why? How?",
          "answer": 100 + i, "tier": "hard"} for i in range(4)]


def fake_catalog() -> Catalog:
    def cheap(req):
        q = req.messages[-1].content
        m = re.search(r"What is (\d+) \+ 1", q)
        if m:
            return str(int(m.group(1)) + 1)  # easy: always right
        return str(req.seed or 0)  # hard: a different guess for every seed -> no agreement

    def strong(req):
        q = req.messages[-1].content
        m = re.search(r"What is (\d+) \+ 1", q)
        return str(int(m.group(1)) + 1) if m else str(100 + int(re.search(r"each of (\d+)", q).group(1)))

    fns = {"cheap": cheap, "strong": strong}
    return Catalog([ModelSpec("cheap", "fake", policies=PolicySpec(retry_attempts=1)),
                    ModelSpec("strong", "fake", policies=PolicySpec(retry_attempts=1))], include_embedded=False,
                   adapters={"fake": lambda s, e: FunctionModel(fns[s.name], name=s.name)})


CFG = EvalConfig(cheap="cheap", strong="strong", samples=3, threshold=0.6)
PRICES = {"cheap": Price(1.0, 1.0), "strong": Price(10.0, 10.0)}


@pytest.fixture
async def records():
    return await collect(CFG, ROWS, fake_catalog(), ComplexityRules(thresholds=[0.22]))


async def test_every_strategy_is_scored_from_the_recorded_calls(records):
    assert len(records) == 10 and all(len(r["samples"]) == 2 for r in records)  # + the greedy answer = 3 votes
    assert [r["routed_to"] for r in records] == ["cheap"] * 6 + ["strong"] * 4
    res = score(CFG, records, PRICES)
    s = {x["strategy"].split(" (")[0] if x["strategy"].startswith("cascade") else x["strategy"]: x for x in res["strategies"]}
    assert s["always-strong"]["accuracy"] == 1.0 and s["always-cheap"]["accuracy"] == 0.6
    assert s["router"]["accuracy"] == 1.0 and s["router"]["share"] == {"cheap": 0.6, "strong": 0.4}
    assert s["router"]["cost_usd"] < s["always-strong"]["cost_usd"]
    # the cascade escalates exactly the 4 hard items (3 different guesses: no agreement), keeps the 6 easy ones
    assert res["escalation_rate"] == 0.4 and s["cascade"]["accuracy"] == 1.0
    mix = s["random (router mix)"]
    assert mix["accuracy"] == pytest.approx(0.6 * 0.6 + 0.4 * 1.0)
    assert mix["cost_usd"] == pytest.approx(0.6 * s["always-cheap"]["cost_usd"] + 0.4 * s["always-strong"]["cost_usd"])
    for x in res["strategies"]:
        assert sum(x["share"].values()) == pytest.approx(1.0)
    # the curve: threshold 0 never escalates (cheap-only accuracy), above 1 always escalates
    assert res["curve"][0]["threshold"] == 0.0 and res["curve"][0]["accuracy"] == 0.6 and res["curve"][0]["escalation_rate"] == 0
    assert res["curve"][-1]["escalation_rate"] == 1.0 and res["curve"][-1]["accuracy"] == 1.0


async def test_easy_items_stop_after_two_agreeing_samples(records):
    res = score(CFG, records, PRICES)
    casc = next(x for x in res["strategies"] if x["strategy"].startswith("cascade"))
    assert casc["share"]["cheap"] == pytest.approx((6 * 2 + 4 * 3) / (6 * 2 + 4 * 3 + 4), abs=1e-4)  # easy: 2 samples, hard: 3


async def test_cli_replays_saved_answers_with_plot_and_json(records, tmp_path):
    saved = tmp_path / "saved.jsonl"
    saved.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = tmp_path / "eval.yaml"
    cat = tmp_path / "models.yaml"
    cat.write_text("models:\n  cheap: {adapter: openai, base_url: 'http://127.0.0.1:9', price: {input: 1, output: 1}}\n"
                   "  strong: {adapter: openai, base_url: 'http://127.0.0.1:9', price: {input: 10, output: 10}}\n")
    cfg.write_text("catalog: models.yaml\ncheap: cheap\nstrong: strong\nsamples: 3\nthreshold: 0.6\n")
    r = CliRunner().invoke(app, ["models", "eval", str(cfg), "--replay", str(saved), "--json", "--plot", str(tmp_path / "c.png")])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["n"] == 10 and res["prices"]["strong"] == {"input": 10.0, "output": 10.0}
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(app, ["models", "eval", str(cfg), "--replay", str(saved)])
    assert r.exit_code == 0 and "always-strong" in r.stdout and "cascade (k=3, t=0.6)" in r.stdout
    assert "of strong accuracy at" in r.stdout  # 100% of strong accuracy well under half its cost on this set
    r = CliRunner().invoke(app, ["models", "eval", str(cfg), "--replay", str(saved), "--target", "1.0", "--relative", "--json"])
    fitted = json.loads(r.stdout)["fitted"]
    assert fitted["accuracy"] == 1.0 and fitted["escalation_rate"] == 0.4  # the cheapest threshold that keeps every answer right
    assert fitted["default_threshold"] == 0.6  # the config's: what a fit must beat on held-out items
    r = CliRunner().invoke(app, ["models", "eval", str(cfg), "--replay", str(saved), "--target", "1.0", "--relative", "--threshold", "1.01"])
    assert r.exit_code == 0 and "fitted threshold" in r.stdout and "cross-validated" in r.stdout, r.stdout  # cheaper than always-strong (1.01) held out


@pytest.mark.parametrize(
    "text, expect",
    [
        ("cheap: local\nsampels: 3\n", r"eval.yaml:2: sampels"),
        ("check: fuzzy\n", r"check: use number, exact, contains or regex"),
        ("samples: 1\n", r"eval.yaml:1: samples"),
        ("prompt: 'no placeholder'\n", r"prompt: needs \{question\}"),
    ],
)
def test_bad_eval_configs_are_located(tmp_path, text, expect):
    p = tmp_path / "eval.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=expect):
        load_eval_config(p)


def test_cli_errors_name_the_problem(tmp_path):
    p = tmp_path / "eval.yaml"
    p.write_text("cheap: nosuch\n")
    d = tmp_path / "d.jsonl"
    d.write_text('{"question": "q"}\n')
    r = CliRunner().invoke(app, ["models", "eval", str(p), str(d)])
    assert r.exit_code == 2 and "unknown model 'nosuch'" in r.output
    p.write_text("cheap: local\nstrong: local\n")
    r = CliRunner().invoke(app, ["models", "eval", str(p), str(d)])
    assert r.exit_code == 2 and 'd.jsonl:1: each line needs "question" and "answer"' in r.output
