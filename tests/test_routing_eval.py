"""Evaluation metrics, data loading, YAML specs, and the `turnout route` commands."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from turnout import ConfigError
from turnout.cli import app
from turnout.routing import Decision, build_router, load_jsonl, load_router, load_spec, metrics, threshold_sweep

runner = CliRunner()


def dec(route, chosen="same", conf=1.0):
    return Decision(route, conf, {}, "test", "", 0.001, "matched" if route else "abstained", route if chosen == "same" else chosen)


def test_metrics_known_confusion():
    ds = [dec("a"), dec("a"), dec("b"), dec("b"), dec(None, None, 0.0), dec("a")]
    ys = ["a", "b", "b", "b", "a", "c"]
    rep = metrics(ds, ys, ["a", "b", "c"])
    assert rep.accuracy == pytest.approx(3 / 6, abs=1e-4)
    assert rep.per_route["a"] == {"precision": pytest.approx(1 / 3, abs=1e-4), "recall": 0.5, "f1": 0.4, "support": 2}
    assert rep.per_route["b"]["precision"] == 1.0 and rep.per_route["b"]["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert rep.per_route["c"]["recall"] == 0.0
    assert rep.abstain_rate == pytest.approx(1 / 6, abs=1e-4) and rep.answered_accuracy == pytest.approx(3 / 5, abs=1e-4)
    assert rep.labels[-1] == "(none)" and rep.confusion[0] == [1, 0, 0, 1]  # true a: once a, once abstained
    assert rep.macro_f1 == pytest.approx((0.4 + 0.8 + 0.0) / 3, abs=1e-3)


async def test_rows_sent_nowhere_or_to_the_fallback_are_abstentions_whatever_the_candidate():
    """A cascade that no stage was sure of keeps its best candidate in `chosen` but sends the row to
    the fallback (or nowhere): that is an abstention, not an answer."""
    from turnout.routing import CascadeRouter, Route, SemanticRouter, Stage, evaluate
    from turnout.routing.evaluate import LabeledRow
    from turnout.testing import FakeEmbedder

    routes = [Route("a", utterances=("apples and pears",)), Route("b", utterances=("bolts and nuts",)), Route("other")]
    sem = SemanticRouter(routes, FakeEmbedder(), fallback="other", temperature=1.0)  # confidences near 0.5
    for fallback in ("other", None):
        cascade = CascadeRouter([Stage(sem, threshold=0.9)], fallback=fallback)  # never sure
        rows = [LabeledRow("apples and pears please", "a"), LabeledRow("bolts and nuts", "b")]
        rep = await evaluate(cascade, rows)
        assert {d for d in rep.outcomes} == {"fallback" if fallback else "abstained"}
        assert rep.abstain_rate == 1.0 and rep.answered_accuracy == 0.0
    rep = await evaluate(SemanticRouter(routes, FakeEmbedder(), fallback="other"), rows)
    assert rep.abstain_rate == 0.0 and rep.answered_accuracy == 1.0 and rep.latency_basis == "per decision"
    assert rep.reliability and sum(b["n"] for b in rep.reliability) == 2
    assert (await evaluate(sem, rows, batch=True)).latency_basis == "batch mean"


def test_top_confusions_list_misroutes_most_first():
    ds = [dec("b"), dec("b"), dec("c"), dec("a"), dec(None, None, 0.0)]
    rep = metrics(ds, ["a", "a", "a", "a", "a"], ["a", "b", "c"])
    assert rep.top_confusions == [{"label": "a", "routed": "b", "count": 2}, {"label": "a", "routed": "c", "count": 1}]


def test_threshold_sweep_trades_coverage_for_fallback():
    ds = [dec("a", conf=0.9), dec("b", conf=0.3), dec("a", conf=0.6)]
    sw = threshold_sweep(ds, ["a", "g", "a"], fallback="g", steps=3)
    assert [s["coverage"] for s in sw] == [1.0, pytest.approx(2 / 3, abs=1e-3), 0.0]
    assert sw[1]["accuracy"] == 1.0  # at 0.5 the wrong low-confidence "b" goes to the fallback "g"


def test_load_jsonl_names_line_and_problem(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "hi", "label": "a"}\n\n{"text": "x", "label": "zzz"}\n')
    with pytest.raises(ConfigError, match=r"d.jsonl:3: label 'zzz' is not a route"):
        load_jsonl(p, routes=["a"])
    p.write_text('{"text": "hi"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"d.jsonl:2: not valid JSON"):
        load_jsonl(p)
    p.write_text('{"label": "a"}\n')
    with pytest.raises(ConfigError, match=r'd.jsonl:1: each line needs a "text"'):
        load_jsonl(p)
    p.write_text('{"text": "hi", "label": "a", "plan": "pro"}\n')
    assert load_jsonl(p)[0].input == {"text": "hi", "plan": "pro"}


SPEC = {
    "name": "t",
    "router": "semantic",
    "fallback": "general",
    "embedder": "fake",
    "routes": {
        "billing": {"utterances": ["charged twice on my invoice", "card payment failed"], "keywords": ["invoice"]},
        "technical": {"utterances": ["the app crashes on startup", "error when uploading"], "keywords": ["crash"]},
        "general": {"utterances": ["hello there", "opening hours"]},
    },
}
ROWS = [("charged twice invoice", "billing"), ("card payment failed again", "billing"), ("app crashes startup", "technical"),
        ("error uploading file", "technical"), ("hello there friend", "general"), ("opening hours please", "general")]


@pytest.fixture
def files(tmp_path):
    spec = tmp_path / "router.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS))
    return spec, data


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("router: rule\nroutes:\n  a: {}\nfallback: b\n", ":4: fallback: 'b' is not one of the routes"),
        ("router: rule\nroutes:\n  a: {}\n  a: {}\n", ":4: duplicate key 'a' (first at line 3)"),
        ("router: rule\nroutes:\n  a:\n    keywrds: [x]\n", ":4: routes.a.keywrds: Extra inputs"),
        ("router: magic\nroutes: {a: {}}\n", ":1: router: Input should be"),
        ("router: rule\nroutes:\n  a:\n    fields: [{field: x, op: '~'}]\n", "routes.a.fields.0.op"),
        # a spec that forgot router: is an error, not a cascade that quietly calls the LLM
        ("routes:\n  a: {utterances: [x]}\n", ":1: router: missing: rule, semantic, llm or cascade"),
    ],
)
def test_spec_errors_name_file_line_and_field(tmp_path, text, expect):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_router(p)
    assert str(p) in str(ei.value) and expect in str(ei.value)


def test_semantic_route_without_utterances_is_reported(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({**SPEC, "routes": {**SPEC["routes"], "sales": {}}}))
    with pytest.raises(ConfigError, match="route 'sales' has no utterances"):
        load_router(p)


def test_default_cascade_has_a_stage_per_kind_of_material(files):
    spec = load_spec(files[0]).model_copy(update={"router": "cascade"})
    from turnout.testing import ScriptedModel

    r = build_router(spec, model=ScriptedModel(default='{"route": "general"}'))
    assert [s.name for s in r.stages] == ["rule", "semantic", "llm"]


def test_an_llm_stage_never_builds_a_hidden_catalog(files):
    from turnout import Catalog

    spec = load_spec(files[0]).model_copy(update={"router": "cascade"})
    with pytest.raises(ConfigError, match="an llm router needs its model: pass model="):
        build_router(spec)  # no model, no catalog: nothing would ever close the embedded LLM it made
    cat = Catalog()
    assert build_router(spec, catalog=cat).stages[-1].router.model.name == "local"  # the caller's catalog, which it closes


def test_cli_decide(files):
    r = runner.invoke(app, ["route", str(files[0]), "the app crashes on startup", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["route"] == "technical" and d["kind"] == "semantic"
    r = runner.invoke(app, ["route", str(files[0]), "my invoice", "--router", "rule"])
    assert r.exit_code == 0 and "billing" in r.output and "keyword" in r.output


def test_cli_eval_table_json_and_plot(files, tmp_path):
    spec, data = files
    r = runner.invoke(app, ["route", "eval", str(spec), str(data)])
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "confusion matrix" in r.output and "per route" in r.output
    png = tmp_path / "plot.png"
    r = runner.invoke(app, ["route", "eval", str(spec), str(data), "--json", "--plot", str(png)])
    rep = json.loads(r.output)
    assert rep["n"] == 6 and rep["accuracy"] == 1.0 and rep["per_route"]["billing"]["support"] == 2
    assert len(rep["sweep"]) == 21 and rep["latency_p50_ms"] >= 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_fit_writes_a_better_spec(files, tmp_path):
    spec, data = files
    strict = tmp_path / "strict.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["semantic"] = {"default_threshold": 0.99}  # deliberately mis-set: every input falls back
    strict.write_text(yaml.safe_dump(doc))
    before = json.loads(runner.invoke(app, ["route", "eval", str(strict), str(data), "--json"]).output)["accuracy"]
    out = tmp_path / "fitted.yaml"
    r = runner.invoke(app, ["route", "fit", str(strict), str(data), "-o", str(out)])
    assert r.exit_code == 0, r.output
    fitted = yaml.safe_load(out.read_text())
    assert all(fitted["routes"][n]["threshold"] < 0.99 for n in ("billing", "technical", "general"))
    after = json.loads(runner.invoke(app, ["route", "eval", str(out), str(data), "--json"]).output)["accuracy"]
    assert before < 0.5 and after == 1.0


def test_cli_errors_are_one_line(files, tmp_path):
    r = runner.invoke(app, ["route", "eval", str(files[0]), str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 2 and "cannot read" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["route", "fit", str(files[0]), str(files[1]), "-o", str(tmp_path / "x.yaml"), "--objective", "vibes"])
    assert r.exit_code == 2 and "--objective" in r.output


def test_cli_fit_as_a_cascade_puts_the_learnt_cut_on_its_semantic_stage(files, tmp_path):
    spec, data = files
    doc = yaml.safe_load(spec.read_text())
    doc["stages"] = [{"router": "semantic", "threshold": 0.9}, {"router": "llm", "threshold": 0.0, "shortlist": 2}]
    spec.write_text(yaml.safe_dump(doc))
    out = tmp_path / "fitted.yaml"
    r = runner.invoke(app, ["route", "fit", str(spec), str(data), "-o", str(out), "--router", "cascade",
                            "--objective", "precision", "--target-precision", "0.9"])
    assert r.exit_code == 0, r.output
    cut = float(r.output.split("answers at confidence >= ")[1].split(":")[0])
    fitted = yaml.safe_load(out.read_text())
    assert fitted["router"] == "cascade" and fitted["escalate_below"] == 0.0  # not a cut on every stage
    sem, llm = fitted["stages"]
    k = int(r.output.split("shown the best ")[1].split(" routes")[0])  # sized by held-out coverage, not kept as written
    assert sem["threshold"] == pytest.approx(cut, abs=1e-3) and (llm["router"], llm["shortlist"]) == ("llm", k) and 1 <= k <= 3
    doc["stages"][1].pop("shortlist")  # a cascade that does not shortlist is never given one
    spec.write_text(yaml.safe_dump(doc))
    r = runner.invoke(app, ["route", "fit", str(spec), str(data), "-o", str(out), "--router", "cascade",
                            "--objective", "precision", "--target-precision", "0.9"])
    assert r.exit_code == 0, r.output
    assert "shown the best" not in r.output and yaml.safe_load(out.read_text())["stages"][1]["shortlist"] == 0
