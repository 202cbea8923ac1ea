"""A catalog's ``embedders:`` against the loopback MockServer: the policies a model has hold for an
encoder too (compliance, budgets, retries, the run's record), a workflow's router names a catalog
embedder, the gateway serves it, and bad entries are located errors."""

from __future__ import annotations

import textwrap

import httpx
import pytest

from turnout import ConfigError
from turnout.errors import BudgetExceeded, DataClassNotAllowed
from turnout.policies import BudgetLedger
from turnout.policies.catalog import Catalog
from turnout.store import SQLiteStore
from turnout.testing import MockServer


def _catalog(tmp_path, url: str, extra: str = "") -> Catalog:
    p = tmp_path / "models.yaml"
    p.write_text(textwrap.dedent(f"""\
        models:
          echo: {{adapter: openai, model: mock, base_url: "{url}", price: {{input: 1, output: 1}}}}
        embedders:
          mock-embed:
            type: openai
            model: mock-embed
            base_url: "{url}"
            dimensions: 64
            batch_size: 2
            price: {{input: 1000}}
            data_classes: [email]
            policies: {{retry: {{attempts: 3, max_delay: 0.01}}}}
        """) + extra)
    return Catalog.load(p)


async def test_a_catalog_embedder_retries_is_charged_and_recorded_in_the_run(tmp_path):
    async with MockServer() as srv:
        cat = _catalog(tmp_path, srv.url)
        emb = cat.embedder("mock-embed")
        srv.faults.append("503")  # the first batch's first attempt: retried, not raised
        store = SQLiteStore(tmp_path / "t.db")
        with store.run("embed", "x") as run:
            rows = await emb.embed(["one text", "two texts", "three"])
        store.flush()
        assert rows.shape == (3, 64)
        assert [len(r.body["input"]) for r in srv.requests if r.path.endswith("/embeddings")].count(2) == 2  # batches of 2, one resent
        calls = store.run_detail(run)["calls"]
        assert sorted(c["model"] for c in calls) == ["mock-embed", "mock-embed"]
        assert sum(c["input_tokens"] for c in calls) > 0 and sum(c["cost_usd"] for c in calls) > 0
        assert sum(c.get("retries") or 0 for c in calls) == 1
        ledger = BudgetLedger(1e-9)  # a budget smaller than one batch: refused before anything is sent
        sent = len(srv.requests)
        cat2 = Catalog.load(tmp_path / "models.yaml", spend=ledger)
        with pytest.raises(BudgetExceeded):
            await cat2.embedder("mock-embed").embed(["a text that costs more than the budget"])
        assert len(srv.requests) == sent
        store.close()
        await cat.aclose()
        await cat2.aclose()


async def test_compliance_holds_for_an_encoder(tmp_path):
    async with MockServer() as srv:
        cat = _catalog(tmp_path, srv.url, "compliance: {}\n")
        emb = cat.embedder("mock-embed")
        await emb.embed(["write to ana@example.com"])  # email is declared: sent
        sent = len(srv.requests)
        with pytest.raises(DataClassNotAllowed):
            await emb.embed(["my card is 4111 1111 1111 1111"])  # not declared: never leaves the process
        assert len(srv.requests) == sent
        await cat.aclose()


async def test_a_workflow_router_names_a_catalog_embedder_and_the_gateway_serves_it(tmp_path):
    from turnout import Workflow

    async with MockServer() as srv:
        _catalog(tmp_path, srv.url)
        (tmp_path / "wf.yaml").write_text(textwrap.dedent("""\
            name: triage
            catalog: models.yaml
            default_model: echo
            routers:
              pick:
                router: semantic
                embedder: mock-embed
                routes:
                  billing: {utterances: ["I was charged twice", "send me my invoice"]}
                  tech: {utterances: ["the app crashes", "login does not work"]}
            steps:
              - route:
                  router: pick
                  routes:
                    billing: {call: {prompt: "billing: {input}"}}
                    tech: {call: {prompt: "tech: {input}"}}
            """))
        wf = Workflow.load(tmp_path / "wf.yaml")
        res = await wf.run("send me the invoice please")
        assert res.status == "ok", res.error
        assert any(r.path.endswith("/embeddings") for r in srv.requests)  # the router's encoder is the catalog's
        await wf.aclose()
        bad = (tmp_path / "wf.yaml").read_text().replace("embedder: mock-embed", "embedder: nope")
        (tmp_path / "bad.yaml").write_text(bad)
        with pytest.raises(ConfigError, match=r"bad.yaml:\d+: routers.pick: .*unknown embedder 'nope'.*mock-embed"):
            Workflow.load(tmp_path / "bad.yaml")


def test_catalog_embedder_errors_are_located(tmp_path):
    p = tmp_path / "models.yaml"
    p.write_text("models: {}\nembedders:\n  e1:\n    type: openai\n")
    with pytest.raises(ConfigError, match=r"models.yaml:\d+: embedders.e1.*needs model"):
        Catalog.load(p)


def test_the_gateway_serves_a_catalog_embedder_under_its_policies(tmp_path, mock_process):
    from test_gateway import start_server, stop

    base_url = mock_process.removesuffix("/v1") + "/v1"
    (tmp_path / "models.yaml").write_text(
        f"models:\n  echo: {{adapter: openai, model: mock, base_url: '{base_url}'}}\n"
        f"embedders:\n  mock-embed: {{type: openai, model: mock-embed, base_url: '{base_url}', dimensions: 64, data_classes: [email]}}\n"
        "compliance: {}\n")
    (tmp_path / "wf.yaml").write_text("name: echo\nsteps:\n  - call: {model: echo, prompt: '{input}'}\n")
    proc, base = start_server(tmp_path, mock_process, "--no-auth")
    try:
        models = httpx.get(base + "/v1/models", timeout=30).json()["data"]
        assert {"local-embed", "mock-embed"} <= {m["id"] for m in models}
        r = httpx.post(base + "/v1/embeddings", json={"model": "mock-embed", "input": ["a", "b", "c"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 3 and len(r.json()["data"][0]["embedding"]) == 64 and r.json()["usage"]["prompt_tokens"] == 3
        r = httpx.post(base + "/v1/embeddings", json={"model": "mock-embed", "input": ["card 4111 1111 1111 1111"]}, timeout=60)
        assert r.status_code == 400 and "4111 1111" not in r.text, r.text
        r = httpx.post(base + "/v1/embeddings", json={"model": "nope", "input": ["x"]}, timeout=60)
        assert r.status_code == 404 and "mock-embed" in r.text
    finally:
        stop(proc)
    store = SQLiteStore(tmp_path / "gw.db")
    runs = [r for r in store.runs(limit=20) if r.tags.get("model") == "mock-embed"]
    assert len(runs) == 2 and {r.status for r in runs} == {"ok", "error"}  # each request a run, the refused one too
    store.close()
