"""YAML workflows: validation errors (golden messages), every step kind with fakes, nesting, the runner's
summary and tracing, the CLI."""

from __future__ import annotations

import json
import re
import textwrap

import pytest
from typer.testing import CliRunner

from turnout import ConfigError, Request
from turnout.cli import app
from turnout.errors import ProviderUnavailable
from turnout.parallel import SAMPLE_SEED, SAMPLE_TEMPERATURE, extract_number, sampler, vote
from turnout.store import SQLiteStore
from turnout.testing import FakeEmbedder, FunctionModel, ScriptedModel
from turnout.workflows import Workflow

runner = CliRunner()

ROUTER = """
routers:
  triage:
    router: rule
    fallback: general
    routes:
      billing: {keywords: [invoice, refund]}
      human: {keywords: [lawyer]}
      general: {}
"""


def write(tmp_path, text, name="wf.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def echo(prefix="echo"):
    return FunctionModel(lambda r: f"{prefix}: {r.messages[-1].content}")


GOLDEN = [
    ("name: x\nsteps: []\n", "wf.yaml:2: steps: List should have at least 1 item after validation, not 0"),
    ("name: x\nsteps:\n  - frob: {}\n", "wf.yaml:3: steps.0: unknown step kind or key 'frob' (a step is one of: call, handler, route, "
                                        "section, vote, chain, orchestrate, guard, escalate, approve, workflow, tool, agent; with optional name and gate)"),
    ("name: x\nsteps:\n  - call: {prompt: hi}\n    handler: a\n", "wf.yaml:3: steps.0: a step has exactly one of"),
    ("name: x\nsteps:\n  - call: {prompt: '{nope}'}\n",
     "wf.yaml:3: steps.0.call.prompt: template variable {nope} is not defined here (known: input, original, steps)"),
    ("name: x\nsteps:\n  - call: {prompt: '{steps.later}'}\n",
     "wf.yaml:3: steps.0.call.prompt: template variable {steps.later} names no step of this workflow (named steps: none)"),
    ("name: x\nsteps:\n  - call: {model: gpt-9}\n", "wf.yaml:3: steps.0.call.model: unknown model 'gpt-9' (known: local, local-strong)"),
    ("name: x\nsteps:\n  - route: {router: r}\n", "wf.yaml:3: steps.0.route.router: unknown router 'r' (defined: none)"),
    ("name: x\nsteps:\n  - handler: h\n", "wf.yaml:3: steps.0.handler: unknown handler 'h' (defined: none)"),
    ("name: x\nhandlers:\n  a: {handler: b}\n  b: {handler: a}\nsteps:\n  - handler: a\n",
     "wf.yaml:3: handlers.a: handlers refer to each other in a cycle: a -> b -> a"),
    ("name: x\n" + ROUTER + "steps:\n  - route: {router: triage, routes: {billing: {call: {}}}}\n",
     "wf.yaml:12: steps.0.route.routes: routes of 'triage' with no target here: human, general — add them or a 'default:'"),
    ("name: x\n" + ROUTER + "steps:\n  - route: {router: triage, routes: {sales: {call: {}}}, default: {call: {}}}\n",
     "wf.yaml:12: steps.0.route.routes.sales: 'sales' is not a route of router 'triage' (billing, human, general)"),
    ("name: x\nsteps:\n  - vote: {sample: {call: {}}, extract: label}\n", "wf.yaml:3: steps.0.vote.labels: extract: label needs labels"),
    ("name: x\nsteps:\n  - vote: {sample: {call: {}}, prior: {alpha: 1, beta: 0.2}}\n",
     "wf.yaml:3: steps.0.vote.prior: a prior is used by early_stop: predictive only"),
    ("name: x\nsteps:\n  - section: {split: {by: tokens}, map: {call: {}}}\n",
     "wf.yaml:3: steps.0.section.split.size: split by tokens needs size"),
    ("name: x\nsteps:\n  - name: a\n    call: {}\n    gate: {regex: ok, divert: zzz}\n",
     "wf.yaml:5: steps.0.gate.divert: divert to 'zzz': no step of that name in this chain (a)"),
    ("name: x\nsteps:\n  - call: {temperature: 5}\n", "wf.yaml:3: steps.0.call.temperature: Input should be less than or equal to 2"),
    ("name: x\n" + ROUTER + "steps:\n  - route:\n      router: triage\n      routes:\n        billing:\n          vote: {sample: {call: {}}, early_stop: null}\n"
     "      default: {call: {}}\n",  # the field's own line and path, not pydantic's union tags
     "wf.yaml:16: steps.0.route.routes.billing.vote.early_stop: Input should be"),
    ("name: x\nsteps:\n  - call: {}\n  x: 1\n", "not valid YAML"),
    ("name: x\nname: y\nsteps:\n  - call: {}\n", "wf.yaml:2: duplicate key 'name' (first at line 1)"),
    ("name: x\nsteps:\n  - workflow: wf.yaml\n", "wf.yaml:3: steps.0.workflow: workflows include each other in a cycle: wf.yaml -> wf.yaml"),
]


@pytest.mark.parametrize(("text", "message"), GOLDEN)
def test_spec_errors_name_file_line_and_field(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        Workflow.load(p)
    assert message in str(ei.value)
    assert str(ei.value).startswith(str(p)) or message == "not valid YAML"


def test_errors_come_before_any_call(tmp_path):
    m = ScriptedModel(default="x")
    p = write(tmp_path, "name: x\nsteps:\n  - call: {}\n  - call: {prompt: '{oops}'}\n")
    with pytest.raises(ConfigError):
        Workflow.load(p, models={"local": m})
    assert m.history == []


async def test_route_with_handlers_escalation_and_store(tmp_path):
    p = write(tmp_path, "name: triage\n" + ROUTER + """
handlers:
  billing: {call: {system: "You do billing.", prompt: "Billing: {input}"}}
steps:
  - name: answer
    route:
      router: triage
      routes:
        billing: billing
        human: {escalate: {queue: legal, message: "A lawyer will call about: {input}"}}
      default: {call: {prompt: "General ({route}, {confidence}): {input}"}}
""")
    wf = Workflow.load(p, models={"local": echo()})
    with SQLiteStore(tmp_path / "t.db") as store:
        a = await wf.run("my invoice is wrong", store=store)
        b = await wf.run("hello", store=store)
        c = await wf.run("get me a lawyer", store=store)
        assert a.text == "echo: Billing: my invoice is wrong" and a.status == "ok" and a.calls == 1
        assert b.text == "echo: General (general, 0.0): hello"
        # with a store the run waits on the legal queue (the caller is told the message meanwhile)
        assert c.text == "A lawyer will call about: get me a lawyer" and c.status == "waiting" and c.calls == 0
        assert c.escalations == [{"queue": "legal", "input": "get me a lawyer", "step": "escalate", "item": c.waiting, "status": "waiting"}]
        assert [(s, d.route) for s, d in a.decisions] == [("answer", "billing")]
        runs = {r.run_id: r for r in store.runs()}
        assert runs[c.run_id].status == "waiting" and runs[a.run_id].output == a.text
        assert [i["item_id"] for i in store.queue_items(queue="legal")] == [c.waiting]
        assert [(d.router, d.route) for d in store.decisions(run_id=a.run_id)] == [("triage", "billing")]
        assert [s["kind"] for s in store.steps(run_id=a.run_id)] == ["call", "route", "chain"]
        assert len(store.calls(run_id=a.run_id)) == 1


async def test_section_maps_a_route_over_each_chunk_and_counts(tmp_path):
    """Nesting: a section's map is a route; the aggregate is label statistics."""
    p = write(tmp_path, "name: reviews\n" + ROUTER.replace("triage", "kind") + """
steps:
  - section:
      split: lines
      map:
        route:
          router: kind
          routes: {billing: {call: {prompt: "negative"}}, human: {escalate: {}}}
          default: {call: {prompt: "positive"}}
      aggregate: count
      concurrency: 2
""")
    wf = Workflow.load(p, models={"local": FunctionModel(lambda r: r.messages[-1].content.upper())})
    res = await wf.run("great product\nrefund please\nlove it\nmy lawyer will call")
    assert res.output["count"] == 4
    assert res.output["labels"] == {"positive": 2, "negative": 1, "your request has been passed to a person (human)": 1}
    assert res.status == "escalated" and [d.route for _, d in res.decisions].count("general") == 2


async def test_section_failures_are_visible_and_synthesis(tmp_path):
    p = write(tmp_path, """
name: summary
steps:
  - section:
      split: {by: paragraphs}
      map: {call: {prompt: "Summarise: {section}"}}
      aggregate: {synthesize: {prompt: "Combine:\\n{outputs}", max_tokens: 50}}
""")

    def reply(r):
        text = r.messages[-1].content
        if "BROKEN" in text:
            raise ProviderUnavailable("down")
        return "FINAL" if text.startswith("Combine") else f"S({text[11:20]})"

    wf = Workflow.load(p, models={"local": FunctionModel(reply)})
    res = await wf.run("First part.\n\nBROKEN part.\n\nThird part.")
    assert res.output == "FINAL" and res.status == "partial"
    sec = next(s for s in res.steps if s.kind == "section")
    assert sec.detail["failed"] == 1 and "section 1" in sec.detail["failures"][0] and "down" in sec.detail["failures"][0]


async def test_vote_stops_early_and_escalates_on_low_agreement(tmp_path):
    p = write(tmp_path, """
name: vote
steps:
  - name: v
    vote:
      sample: {call: {prompt: "{input}"}}
      n: 8
      extract: number
      escalate_below: 0.7
      escalate: {call: {model: local-strong, prompt: "Strong: {input} (weak said {answer} at {agreement})"}}
""")
    always = ScriptedModel(default="The answer is 42.")
    wf = Workflow.load(p, models={"local": always, "local-strong": echo("strong")})
    res = await wf.run("6*7?")
    assert res.output == "42" and len(always.history) == 5 and res.calls == 5  # decided after 5 of 8 agreeing votes
    # the library's sampling defaults, one set for vote(), sampler() and this step
    assert {r.seed for r in always.history} == {SAMPLE_SEED + i for i in range(5)} and all(r.temperature == SAMPLE_TEMPERATURE for r in always.history)
    answers = iter(["1", "2", "3", "4", "5", "6", "7", "8"])
    wf = Workflow.load(p, models={"local": FunctionModel(lambda r: next(answers)), "local-strong": echo("strong")})
    res = await wf.run("hard")
    assert res.output == "strong: Strong: hard (weak said  at 0.125)"  # an 8-way tie is no answer (tie: escalate, the default)
    assert next(s for s in res.steps if s.kind == "vote").detail["escalated"] is True


async def test_a_tied_vote_step_is_no_answer_as_in_the_library_unless_told(tmp_path):
    """The YAML vote step and vote() share one tie default: a 2-2 split is no answer, never a silent pick."""
    async def run(extra: str) -> tuple:
        p = write(tmp_path, f"""
name: vote
steps:
  - name: v
    vote: {{sample: {{call: {{prompt: "{{input}}"}}}}, n: 4, extract: number, early_stop: none{extra}}}
""")
        votes = iter(["7", "9", "9", "7"])
        res = await Workflow.load(p, models={"local": FunctionModel(lambda r: next(votes))}).run("q")
        return res.output, res.status, next(s for s in res.steps if s.kind == "vote").detail["outcome"]

    library = await vote(sampler(ScriptedModel(queue=["7", "9", "9", "7"]), Request.of("q")), 4, extract=extract_number, early_stop=None)
    assert (library.answer, library.outcome) == (None, "tie")
    assert await run("") == (None, "no_answer", "tie")
    assert await run(", tie: first_seen") == ("7", "ok", "decided")


async def test_vote_with_a_fitted_prior_stops_after_two_agreeing_samples(tmp_path):
    p = write(tmp_path, """
name: vote
steps:
  - name: v
    vote:
      sample: {call: {prompt: "{input}"}}
      n: 8
      extract: number
      early_stop: predictive
      prior: {alpha: 0.4, beta: 0.1}
""")
    always = ScriptedModel(default="42")
    res = await Workflow.load(p, models={"local": always}).run("6*7?")
    assert res.output == "42" and res.calls == 2  # the uniform prior would need 3 (tested in test_voting)


async def test_chain_gates_divert_and_stop(tmp_path):
    p = write(tmp_path, """
name: essay
steps:
  - name: outline
    call: {prompt: "Outline: {input}"}
    gate: {contains: "1.", divert: outline}
  - name: check
    call: {prompt: "Check: {steps.outline}"}
    gate: {not_contains: "reject", message: "stopped: {reason}"}
  - name: text
    call: {prompt: "Write from {steps.outline}"}
""")
    replies = iter(["no numbering", "1. intro 2. end", "looks fine", "FULL TEXT"])
    m = FunctionModel(lambda r: next(replies))
    res = await Workflow.load(p, models={"local": m}).run("cats")
    assert res.output == "FULL TEXT" and res.calls == 4 and res.status == "ok"
    replies = iter(["1. a", "I reject this"])
    res = await Workflow.load(p, models={"local": FunctionModel(lambda r: next(replies))}).run("dogs")
    assert res.output == "stopped: output contains 'reject'" and res.status == "stopped" and res.calls == 2


async def test_orchestrate_and_guard(tmp_path):
    p = write(tmp_path, """
name: research
steps:
  - orchestrate: {max_subtasks: 2}
  - guard:
      respond: {prompt: "Polish: {input}"}
      patterns: ["forbidden"]
      message: "withheld"
""")

    def reply(r):
        text = r.messages[-1].content
        if r.response_format is not None and "subtasks" in json.dumps(r.response_format.schema or {}):
            return json.dumps({"subtasks": [{"title": "a", "instruction": "do a"}, {"title": "b", "instruction": "do b"},
                                            {"title": "c", "instruction": "do c"}]})
        if text.startswith("Polish"):
            return "polished"
        return "forbidden synthesis" if "Results of the subtasks" in text else "part"

    res = await Workflow.load(p, models={"local": FunctionModel(reply)}).run("topic")
    orch = next(s for s in res.steps if s.kind == "orchestrate")
    assert orch.detail["subtasks"] == ["a", "b"]  # cut to max_subtasks, with a note
    assert res.output == "withheld" and res.status == "withheld"  # the screen saw "forbidden" in the synthesis


async def test_missing_variable_at_run_time_is_a_clear_failed_run(tmp_path):
    p = write(tmp_path, "name: x\n" + ROUTER + """
steps:
  - route:
      router: triage
      routes: {billing: {name: bill, call: {prompt: "b"}}}
      default: {call: {prompt: "g"}}
  - call: {prompt: "{steps.bill}"}
""")
    res = await Workflow.load(p, models={"local": echo()}).run("hello")
    assert res.status == "error" and "{steps.bill}" in res.error and "did not run" in res.error and res.calls == 1


async def test_semantic_router_in_a_workflow_uses_the_given_embedder(tmp_path):
    p = write(tmp_path, """
name: sem
routers:
  topic:
    router: semantic
    routes:
      weather: {utterances: ["rain tomorrow", "sunny weather"]}
      food: {utterances: ["pizza recipe", "cook pasta"]}
steps:
  - route: {router: topic, routes: {weather: {call: {prompt: "W"}}, food: {call: {prompt: "F"}}}}
""")
    wf = Workflow.load(p, models={"local": echo()}, embedder=FakeEmbedder())
    assert (await wf.run("sunny weather")).text == "echo: W"


def test_cli_validate_and_run(tmp_path, mock_process):
    cat = write(tmp_path, f"models:\n  local: {{adapter: openai, base_url: '{mock_process}', model: m}}\n", "models.yaml")
    p = write(tmp_path, "name: triage\n" + ROUTER + """
example: "refund my invoice"
steps:
  - name: answer
    route: {router: triage, routes: {billing: {call: {prompt: "B {input}"}}}, default: {escalate: {queue: people}}}
""")
    r = runner.invoke(app, ["validate", str(p), "-c", str(cat)])
    assert r.exit_code == 0 and "ok" in r.output and "1 route" in r.output
    db = tmp_path / "t.db"
    r = runner.invoke(app, ["run", str(p), "-c", str(cat), "--db", str(db), "--json"])
    body = json.loads(r.output)
    assert body["output"] == "echo: B refund my invoice" and body["routes"][0]["route"] == "billing" and body["calls"] == 1
    with SQLiteStore(db) as store:
        assert len(store.calls(run_id=body["run_id"])) == 1  # once, though the catalog model and the run's meter both see it
    r = runner.invoke(app, ["run", str(p), "-c", str(cat), "--db", str(db), "-i", "my lawyer"])
    assert r.exit_code == 0 and "passed to a person (people)" in r.output and re.search(r"route \(answer\)\s+human", r.output)
    bad = write(tmp_path, "name: x\nsteps:\n  - call: {prompt: '{x}'}\n", "bad.yaml")
    r = runner.invoke(app, ["validate", str(bad)])
    assert r.exit_code == 2 and "bad.yaml:3: steps.0.call.prompt" in r.output


def test_every_step_kind_of_the_schema_has_its_compile_function():
    from turnout.workflows.spec import _KINDS, STEP_KINDS

    assert set(STEP_KINDS) == set(_KINDS)


def test_step_nodes_take_their_settings_by_keyword_only():
    """Both doors build nodes by keyword (the YAML compiler from the schema's model_dump()), so a field
    added to a node can never shift another one's value."""
    from turnout.workflows import Call, Escalate, GuardStep, OrchestrateStep, RouteStep, SectionStep, Sequence, StepGate, VoteStep

    leading = {Call: 1, Escalate: 1, RouteStep: 2, SectionStep: 2, VoteStep: 2, GuardStep: 1, Sequence: 1, OrchestrateStep: 0,
               StepGate: 0}
    for cls, n in leading.items():
        cls(*[None] * n)  # the leading fields may be positional ...
        with pytest.raises(TypeError):
            cls(*[None] * (n + 1))  # ... no more


async def test_each_parallel_branch_counts_its_own_calls(tmp_path):
    """A vote's samples and a section's parts each meter their own calls (a model resolved once per
    run is wrapped per branch): every call step costs what its call cost, and they add up to the step."""
    from turnout import Price
    from turnout.testing import ScriptedModel

    p = write(tmp_path, """
name: costs
steps:
  - name: v
    vote: {sample: {call: {prompt: "Q: {input}"}}, n: 3, early_stop: none}
  - name: parts
    section: {split: lines, map: {call: {prompt: "{section}"}}}
""")
    wf = Workflow.load(p, models={"local": ScriptedModel(default="same answer\nand a second line", price=Price(1.0, 1.0))})
    res = await wf.run("a question")
    calls = [s for s in res.steps if s.kind == "call"]
    assert len(calls) >= 4 and all(s.cost_usd > 0 for s in calls), [(s.name, s.cost_usd) for s in calls]
    vote = next(s for s in res.steps if s.kind == "vote")
    assert sum(s.cost_usd for s in calls[:3]) == pytest.approx(vote.cost_usd) and res.cost_usd == pytest.approx(sum(s.cost_usd for s in calls))
