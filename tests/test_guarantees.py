"""The promises users build on, each driven through the doors it applies to (docs/guarantees.md):
a key never leaves the process, bad input is a located error (never a traceback, nothing done
lost), a bad row fails alone, compliance survives a workflow's own models, budgets hold for
prompts chars/4 undercounts and for requests without max_tokens, routed calls carry their own
decision, and the gateway refuses foreign Host headers."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from turnout import BudgetExceeded, Catalog, Price, Request
from turnout._errors import BadResponse, ContextLengthExceeded
from turnout.models.openai import OpenAICompatible
from turnout.policies import Budgeted, BudgetLedger
from turnout.testing import MockServer
from turnout.testing._mockserver import FAULT_KINDS

KEY = "sk-fake-upstream-0123456789abcdefXYZ"  # the operator's upstream key: must never be seen outside


def _no_key(*texts: str | bytes) -> None:
    for t in texts:
        b = t if isinstance(t, bytes) else t.encode("utf-8", "replace")
        assert KEY.encode() not in b and KEY[-12:].encode() not in b


def _fault(upstream: str, kind: str, times: int = 1) -> None:
    httpx.post(upstream.removesuffix("/v1") + "/_mock/faults", json={"kind": kind, "times": times}, timeout=5)


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "turnout", *args], capture_output=True, text=True, timeout=120, env=e, cwd=cwd)


# -- secrets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("fault", FAULT_KINDS)
async def test_the_upstream_key_is_in_no_error_text_python_api(fault, stream):
    """Every fault the MockServer can inject, whole answers and streams: whatever comes back — an
    error's text, repr and args, or the answer — carries no trace of the key."""
    async with MockServer() as srv:
        m = OpenAICompatible("m", base_url=srv.url, api_key=KEY, timeout=2.0)  # "hang" never answers: the timeout ends it
        srv.fail(fault)
        seen = []
        try:
            if stream:
                async for chunk in m.stream(Request.of("hi")):
                    seen.append(chunk.delta)
            else:
                seen.append((await m.complete(Request.of("hi"))).text)
        except Exception as e:  # noqa: BLE001 - each fault raises its own error (or none, for a stream-only fault on complete)
            seen += [str(e), repr(e), repr(e.args)]
        assert seen
        _no_key(*seen)
        await m.aclose()


async def test_a_200_that_echoes_the_headers_is_a_bad_response_without_the_key():
    async with MockServer() as srv:
        m = OpenAICompatible("m", base_url=srv.url, api_key=KEY)
        srv.fail("echo_headers")
        with pytest.raises(BadResponse) as info:
            await m.complete(Request.of("hi"))
        assert "unexpected response shape" in str(info.value) and "***" in str(info.value)  # the echo is there, scrubbed
        _no_key(str(info.value))
        await m.aclose()


def _secret_setup(tmp: Path, upstream: str) -> None:
    (tmp / "models.yaml").write_text(
        f"models:\n  up: {{adapter: openai, base_url: '{upstream}', model: m, api_key_env: UPSTREAM_KEY, "
        "price: {input: 1, output: 1}, policies: {retry: {attempts: 1}}}\n"
        "auto: {tiers: {default: [up]}}\n")
    (tmp / "wf.yaml").write_text("name: w\nsteps:\n  - name: a\n    call: {model: up, prompt: 'Say: {input}', max_tokens: 20}\n")
    (tmp / "in.jsonl").write_text("".join(json.dumps({"id": f"i{k}", "input": f"t{k}"}) + "\n" for k in range(3)))


def test_the_upstream_key_reaches_no_cli_output_file_or_stored_row(tmp_path, mock_process):
    _secret_setup(tmp_path, mock_process)
    env = {"UPSTREAM_KEY": KEY}
    _fault(mock_process, "echo_headers")
    r = _cli("run", str(tmp_path / "wf.yaml"), "-i", "hello", "-c", str(tmp_path / "models.yaml"), "--db", str(tmp_path / "s.db"),
             env=env)
    assert r.returncode == 1 and "BadResponse" in r.stderr and "Traceback" not in r.stderr
    _no_key(r.stdout, r.stderr)
    _fault(mock_process, "echo_headers", 3)
    r = _cli("batch", str(tmp_path / "wf.yaml"), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
             "-c", str(tmp_path / "models.yaml"), "--db", str(tmp_path / "s.db"), env=env)
    assert r.returncode == 1, r.stderr
    out = (tmp_path / "out.jsonl").read_text()
    assert out.count('"status": "error"') == 3 and "unexpected response shape" in out
    _no_key(r.stdout, r.stderr, out)
    db = tmp_path / "s.db"
    with sqlite3.connect(db) as c:  # every table, every text column (steps.detail, batch_items.error, runs ...)
        for (table,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in c.execute(f"SELECT * FROM {table}"):
                _no_key(json.dumps(row, default=str))
    for f in tmp_path.glob("s.db*"):
        _no_key(f.read_bytes())


def test_a_secret_pasted_into_a_prompt_is_not_stored(tmp_path, mock_process):
    _secret_setup(tmp_path, mock_process)
    pasted = "sk-proj-PASTEDbyAuser0123456789abcdef"
    r = _cli("run", str(tmp_path / "wf.yaml"), "-i", f"my key is {pasted}", "-c", str(tmp_path / "models.yaml"),
             "--db", str(tmp_path / "s.db"), env={"UPSTREAM_KEY": KEY})
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(tmp_path / "s.db") as c:
        (inp,) = c.execute("SELECT input FROM runs").fetchone()
    assert pasted not in inp and "[SECRET]" in inp
    r = _cli("run", str(tmp_path / "wf.yaml"), "-i", "plain words", "-c", str(tmp_path / "models.yaml"),
             "--db", str(tmp_path / "r.db"), "--redact", env={"UPSTREAM_KEY": KEY})
    with sqlite3.connect(tmp_path / "r.db") as c:
        (inp,) = c.execute("SELECT input FROM runs").fetchone()
    assert r.returncode == 0 and inp.startswith("sha256:")  # --redact (or TURNOUT_REDACT=1): no text at all


@pytest.fixture
def gateway(tmp_path, mock_process):
    from tests.test_gateway import start_server, stop
    from turnout.server.keys import KeyRing
    from turnout.store import SQLiteStore

    _secret_setup(tmp_path, mock_process)
    store = SQLiteStore(tmp_path / "gw.db")
    tk = KeyRing(store).create("app", models=["*"], workflows=["*"])[0]
    store.close()
    proc, base = start_server(tmp_path, mock_process, env={**os.environ, "UPSTREAM_KEY": KEY})
    try:
        yield {"base": base, "key": tk, "upstream": mock_process, "proc": proc, "tmp": tmp_path}
    finally:
        stop(proc)


def test_the_upstream_key_reaches_no_gateway_body_run_or_dashboard(gateway):
    g = gateway
    h = {"Authorization": f"Bearer {g['key']}"}
    bodies = []
    for model, stream in (("up", False), ("up", True), ("turnout/auto", False), ("workflow/w", False)):
        _fault(g["upstream"], "echo_headers")
        r = httpx.post(g["base"] + "/v1/chat/completions", headers=h, timeout=20,
                       json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 502, (model, r.text)
        bodies.append(r.text)
        run_id = r.headers.get("x-turnout-run-id")
        if run_id:
            bodies.append(httpx.get(g["base"] + f"/v1/runs/{run_id}", headers=h, timeout=20).text)
            bodies.append(httpx.get(g["base"] + f"/runs/{run_id}", timeout=20).text)
    bodies.append(httpx.get(g["base"] + "/", timeout=20).text)
    bodies.append(httpx.get(g["base"] + "/metrics", timeout=20).text)
    _no_key(*bodies)
    for f in g["tmp"].glob("gw.db*"):
        _no_key(f.read_bytes())


def test_gateway_answers_bad_bodies_and_overflows_with_a_400_and_logs_no_429(gateway):
    g = gateway
    h = {"Authorization": f"Bearer {g['key']}"}
    deep = '{"model": "up", "messages": ' + "[" * 5000 + "]" * 5000 + "}"
    r = httpx.post(g["base"] + "/v1/chat/completions", headers={**h, "content-type": "application/json"}, content=deep, timeout=20)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    _fault(g["upstream"], "context")
    cl = openai.OpenAI(base_url=g["base"] + "/v1", api_key=g["key"], max_retries=0, timeout=20)
    with pytest.raises(openai.BadRequestError) as info:  # a 400: the openai client does not retry it
        cl.chat.completions.create(model="up", messages=[{"role": "user", "content": "long"}])
    assert info.value.code == "context_length_exceeded"


def test_gateway_refuses_a_foreign_host_header(gateway):
    g = gateway
    ok = httpx.get(g["base"] + "/healthz", timeout=10)
    assert ok.status_code == 200
    for path in ("/", "/healthz", "/v1/models"):
        r = httpx.get(g["base"] + path, headers={"Host": "attacker.example"}, timeout=10)  # DNS rebinding sends this
        assert r.status_code == 421 and r.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(g["base"] + "/healthz", headers={"Host": "localhost:1234"}, timeout=10).status_code == 200


# -- bad input: located errors, never a traceback, nothing lost ----------------------------------------
@pytest.mark.parametrize("name, content, where", [
    ("utf8", b"name: w\nsteps:\n  - name: a\n    call: {model: local, prompt: '\xff\xfe'}\n", "wf.yaml:4: not valid UTF-8"),
    ("deep", b"name: w\nx: " + b"[" * 3000 + b"]" * 3000 + b"\n", "wf.yaml"),
    ("nested", b"name: w\nx: " + b"[" * 80 + b"]" * 80 + b"\n", "wf.yaml:2: nested more than 64 levels"),
    ("bomb", b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
             b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
             b"g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n", "more than 100,000 values"),
])
def test_a_bad_workflow_file_is_one_located_line(tmp_path, name, content, where):
    (tmp_path / "wf.yaml").write_bytes(content)
    r = _cli("validate", str(tmp_path / "wf.yaml"))
    assert r.returncode == 2 and where in r.stderr and "Traceback" not in r.stderr, r.stderr
    (tmp_path / "models.yaml").write_bytes(b"models:\n  x: {adapter: openai, model: '\xff'}\n")
    (tmp_path / "wf2.yaml").write_text("name: w\ncatalog: models.yaml\nsteps:\n  - name: a\n    call: {model: x, prompt: hi}\n")
    r = _cli("validate", str(tmp_path / "wf2.yaml"))
    assert r.returncode == 2 and "models.yaml:2: not valid UTF-8" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_bad_lines_are_skipped_alone_and_a_lone_surrogate_poisons_nothing(tmp_path):
    from turnout.testing import MockServer  # noqa: F401 - the batch talks to a subprocess mock below

    wf = tmp_path / "wf.yaml"
    wf.write_text("name: w\nsteps:\n  - name: a\n    call: {model: fake, prompt: 'Say: {input}', max_tokens: 5}\n")
    lines = [json.dumps({"id": f"i{k}", "input": f"t{k}"}).encode() for k in range(6)]
    lines[2] = json.dumps({"id": "i2", "input": "x \ud800 y"}).encode()  # valid JSON, not encodable as UTF-8
    lines.insert(4, b'{"id": "bad", "input": "\xff"}')  # not UTF-8
    lines.insert(5, b'{"id": "deep", "input": ' + b"[" * 3000 + b"]" * 3000 + b"}")  # nested too deeply
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "models.yaml").write_text("models:\n  fake: {adapter: echo}\n")
    code = ("import sys\nfrom turnout.cli import main\nimport turnout.models.catalog as c\n"
            "from turnout.testing import FunctionModel\n"
            "c.ADAPTERS['echo'] = lambda spec, trust_env: FunctionModel(lambda r: 'echo ' + r.messages[-1].content, name=spec.name)\n"
            "sys.argv = ['turnout'] + sys.argv[1:]\nmain()\n")
    (tmp_path / "run.py").write_text(code)
    args = ["batch", str(wf), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-c", str(tmp_path / "models.yaml"),
            "--db", str(tmp_path / "b.db")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
    r = subprocess.run([sys.executable, str(tmp_path / "run.py"), *args], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "in.jsonl:5: skipped: not valid UTF-8" in r.stderr and "in.jsonl:6: skipped: not accepted: nested" in r.stderr
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in rows] == [f"i{k}" for k in range(6)] and all(x["status"] == "ok" for x in rows)
    assert "\ufffd" in rows[2]["output"]
    with sqlite3.connect(tmp_path / "b.db") as c:
        assert c.execute("SELECT COUNT(*), SUM(attempts) FROM batch_items WHERE status = 'done'").fetchone() == (6, 6)
        assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 6  # every run row was stored, the bad one too
    r = subprocess.run([sys.executable, str(tmp_path / "run.py"), *args], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "6 of 6 items already done" in r.stderr  # nothing re-billed; the output rewritten
    with sqlite3.connect(tmp_path / "b.db") as c:
        assert c.execute("SELECT SUM(attempts) FROM batch_items").fetchone()[0] == 6


def test_a_row_the_database_refuses_is_dropped_alone(tmp_path):
    from turnout.store import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    with store.run("w", "good input") as rid:
        store.record_step("a", "call", latency_s=0.1)
        store._put("step", (rid, "bad", "call", 0.0, 0.0, "ok", 0.0, object()))  # a value sqlite cannot bind
        store.record_step("b", "call", latency_s=0.1)
    store.flush()
    assert [s["name"] for s in store.steps(run_id=rid)] == ["a", "b"] and store.dropped == 1
    assert store.runs()[0].status == "ok"
    store.close()


# -- compliance: a workflow's own models: keep the catalog's policy --------------------------------------
async def test_a_workflows_own_models_keep_the_catalogs_compliance(tmp_path):
    from turnout.testing import ScriptedModel
    from turnout.workflows import Workflow

    (tmp_path / "models.yaml").write_text(
        "models:\n  guarded: {adapter: scripted, data_classes: [email]}\n"
        "compliance: {custom: {employee_id: 'EMP-\\d{6}'}}\n")
    sent: list[str] = []

    def scripted(spec, trust_env):
        m = ScriptedModel(default="ok", name=spec.name)
        orig = m.complete

        async def complete(req):
            sent.append(req.messages[-1].content)
            return await orig(req)

        m.complete = complete  # type: ignore[method-assign]
        return m

    import turnout.models.catalog as c

    c.ADAPTERS["scripted"] = scripted
    try:
        for extra in ("", "models:\n  other: {adapter: scripted}\n"):
            (tmp_path / "wf.yaml").write_text(
                "name: w\ncatalog: models.yaml\n" + extra + "steps:\n  - name: a\n    call: {model: guarded, prompt: '{input}'}\n")
            wf = Workflow.load(tmp_path / "wf.yaml")
            res = await wf.run("my id is EMP-123456")
            assert res.status == "error" and "employee_id" in (res.error or ""), (extra, res.error)
            await wf.aclose()
        assert not any("EMP-123456" in s for s in sent)
    finally:
        del c.ADAPTERS["scripted"]


# -- budgets: chars/4-beating prompts, no max_tokens, 100-way concurrency ----------------------------------
@pytest.mark.parametrize("n", [100, 500])
@pytest.mark.parametrize("max_tokens", [None, 64], ids=["no-max_tokens", "max_tokens"])
@pytest.mark.parametrize("prompt", ["a b c d e f g h " * 40, "价格是多少？请回答。" * 40, "x=[1,2,3];y={'k':(4,5)};" * 20],
                         ids=["short-words", "cjk", "code"])
async def test_budget_holds_under_concurrency_with_and_without_max_tokens(prompt, max_tokens, n):
    limit = 0.2  # a CJK call reserves ~$0.055 (1,204 bytes + the 512-token cap): a few fit at once for every prompt
    async with MockServer() as srv:
        # the mock counts tokens by words/characters; price so that a call costs ~ a few cents
        m = OpenAICompatible("m", base_url=srv.url, price=Price(20.0, 60.0))
        ledger = BudgetLedger(limit)
        b = Budgeted(m, ledger)

        async def one() -> float:
            try:
                return (await b.complete(Request.of(prompt, max_tokens=max_tokens))).cost_usd  # None: the cap is sent for us
            except BudgetExceeded:
                return 0.0

        costs = await asyncio.gather(*(one() for _ in range(n)))
        assert all(r.body.get("max_tokens") == (max_tokens or 512) for r in srv.requests)  # the cap reached the provider
        one_call_max = Price(20.0, 60.0).estimate(Request.of(prompt, max_tokens=max_tokens or 512))
        assert sum(costs) <= limit + one_call_max and ledger.spent <= limit + 1e-12
        assert sum(c > 0 for c in costs) > 0  # some calls were served: the limit is not met by refusing everything
        await m.aclose()


# -- routed models: every call carries its own decision -------------------------------------------------------
async def test_concurrent_routed_calls_each_carry_their_own_decision():
    from turnout.models.catalog import ModelSpec
    from turnout.routing import ModelRouter
    from turnout.routing.model_router import ComplexityRules
    from turnout.testing import ScriptedModel

    models = {"cheap": ScriptedModel(default="c", name="cheap", latency=0.05), "strong": ScriptedModel(default="s", name="strong")}

    cat = Catalog([ModelSpec("cheap", "openai", tier="small"), ModelSpec("strong", "openai", tier="large")],
                  include_embedded=False)
    router = ModelRouter(cat, tiers={"small": ["cheap"], "large": ["strong"]},
                         complexity=ComplexityRules(["small", "large"]), resolve=lambda n: models[n])
    rm = router.as_model()
    easy = Request.of("hi")
    hard = Request.of("Analyze the trade-offs step by step, derive the complexity, then compare designs and explain why. " * 30)
    outs = await asyncio.gather(*(rm.complete(easy if i % 2 else hard) for i in range(20)))
    for i, c in enumerate(outs):
        want = "cheap" if i % 2 else "strong"
        assert c.model == want and c.decision.route == want, (i, c.model, c.decision)


async def test_context_overflow_is_a_caller_error():
    async with MockServer() as srv:
        m = OpenAICompatible("m", base_url=srv.url)
        srv.fail("context")
        with pytest.raises(ContextLengthExceeded):
            await m.complete(Request.of("long"))
        await m.aclose()


@pytest.fixture
def slow_stream_upstream():
    """A mock upstream whose streamed chunks come 5 s apart: a client that reads the first and goes
    away has certainly cut the stream (whether or not the gateway has noticed yet, the key must hold)."""
    from tests.conftest import mock_server_process

    with mock_server_process("--chunk-delay", "5") as url:
        yield url


def test_a_stream_the_client_cuts_keeps_its_reservation_on_the_key(tmp_path, slow_stream_upstream):
    from tests.test_gateway import start_server, stop
    from turnout.server.keys import KeyRing
    from turnout.store import SQLiteStore

    _secret_setup(tmp_path, slow_stream_upstream)
    store = SQLiteStore(tmp_path / "gw.db")
    # a call of "hi" without max_tokens reserves (2 bytes + 4) x $1/M + 512 x $1/M = $0.000518: two fit in $0.0011
    tk = KeyRing(store).create("tight", models=["*"], budget_usd=0.0011)[0]
    store.close()
    proc, base = start_server(tmp_path, slow_stream_upstream, env={**os.environ, "UPSTREAM_KEY": KEY})
    try:
        h = {"Authorization": f"Bearer {tk}"}
        body = {"model": "up", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        run_ids = []
        for _ in range(2):
            with httpx.stream("POST", base + "/v1/chat/completions", headers=h, json=body, timeout=60) as r:
                assert r.status_code == 200
                run_ids.append(r.headers["x-turnout-run-id"])
                next(r.iter_bytes())  # the first chunk, then the client goes away
        r = httpx.post(base + "/v1/chat/completions", headers=h, json={**body, "stream": False}, timeout=20)
        assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded", r.text
        statuses = {httpx.get(base + f"/v1/runs/{rid}", headers=h, timeout=20).json()["run"]["status"] for rid in run_ids}
        assert "ok" not in statuses  # a cut stream is never recorded as a finished one
    finally:
        stop(proc)


def test_a_client_that_leaves_mid_stream_stops_the_upstream_stream_and_cancels_the_run(tmp_path, slow_stream_upstream):
    """The gateway notices the client going away while it waits on the upstream (5 s between
    chunks): it closes the upstream stream instead of reading it to its end, and the run is
    recorded as cancelled — not left running, not finished as ok."""
    from tests.test_gateway import start_server, stop

    _secret_setup(tmp_path, slow_stream_upstream)
    proc, base = start_server(tmp_path, slow_stream_upstream, "--no-auth", env={**os.environ, "UPSTREAM_KEY": KEY})
    stats = slow_stream_upstream.removesuffix("/v1") + "/_mock/stats"
    try:
        before = httpx.get(stats, timeout=10).json()["disconnects"]
        body = {"model": "up", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            rid = r.headers["x-turnout-run-id"]
            next(r.iter_bytes())  # the first chunk, then the client goes away
        status = "running"
        for _ in range(120):  # the upstream's next chunk is 5 s away: the gateway must cut it before then or soon after
            status = httpx.get(base + f"/v1/runs/{rid}", timeout=10).json()["run"]["status"]
            if status != "running" and httpx.get(stats, timeout=10).json()["disconnects"] > before:
                break
            time.sleep(0.25)
        assert status == "cancelled"
        assert httpx.get(stats, timeout=10).json()["disconnects"] > before  # the upstream stream was closed, not read on
    finally:
        stop(proc)


# -- gateway key budgets through every door, call by call ---------------------------------------------------
@pytest.mark.parametrize("max_tokens", [None, 64], ids=["no-max_tokens", "max_tokens"])
@pytest.mark.parametrize("n", [100, 500])
def test_a_key_budget_holds_through_every_gateway_door_at_once(tmp_path, mock_process, n, max_tokens):
    """n requests at once on one key — a plain model, turnout/auto, a two-call workflow by its runs
    endpoint and as ``workflow/w``, and streams the client cuts after the first chunk — with and
    without max_tokens: the key's spend (every call the store recorded for it) stays within the limit plus
    one call's maximum cost, and what is refused is a 429 budget_exceeded."""
    from tests.test_gateway import start_server, stop
    from turnout.server.keys import KeyRing
    from turnout.store import SQLiteStore

    (tmp_path / "models.yaml").write_text(
        f"models:\n  up: {{adapter: openai, base_url: '{mock_process}', model: m, api_key_env: UPSTREAM_KEY, "
        "price: {input: 10000, output: 10}, policies: {retry: {attempts: 1}}}\n"
        "auto: {tiers: {default: [up]}}\n")
    cap = f", max_tokens: {max_tokens}" if max_tokens else ""
    (tmp_path / "wf.yaml").write_text(f"name: w\nsteps:\n  - name: a\n    call: {{model: up, prompt: 'Say: {{input}}'{cap}}}\n"
                                      f"  - name: b\n    call: {{model: up, prompt: 'Again: {{steps.a}}'{cap}}}\n")
    # the mock counts a prompt's tokens by words, the reservation bounds them by bytes: a call costs
    # about $0.05 and reserves about $0.25-0.45, so about three calls fit in flight at once
    limit = 1.0
    store = SQLiteStore(tmp_path / "gw.db")
    secret, key = KeyRing(store).create("k", models=["*"], workflows=["*"], budget_usd=limit)
    store.close()
    proc, base = start_server(tmp_path, mock_process, env={**os.environ, "UPSTREAM_KEY": KEY})
    h = {"Authorization": f"Bearer {secret}"}
    msg = [{"role": "user", "content": "价格 x=[1,2]; a b c"}]
    extra = {"max_tokens": max_tokens} if max_tokens else {}

    async def one(i: int, c: httpx.AsyncClient) -> str:
        door = i % 5
        if door == 0:
            r = await c.post("/v1/chat/completions", headers=h, json={"model": "up", "messages": msg, **extra})
        elif door == 1:
            r = await c.post("/v1/chat/completions", headers=h, json={"model": "turnout/auto", "messages": msg, **extra})
        elif door == 2:
            r = await c.post("/v1/workflows/w/runs", headers=h, json={"input": "价格 x=[1,2]"})
        elif door == 3:
            r = await c.post("/v1/chat/completions", headers=h, json={"model": "workflow/w", "messages": msg, **extra})
        else:
            async with c.stream("POST", "/v1/chat/completions", headers=h,
                                json={"model": "up", "stream": True, "messages": msg, **extra}) as s:
                if s.status_code == 200:
                    async for _chunk in s.aiter_bytes():
                        break  # the first chunk, then the client goes away
                    return "cut"
                await s.aread()
                r = s
        if r.status_code == 200:
            return "ok"
        assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded", (door, r.status_code, r.text)
        return "429"

    async def main() -> list[str]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as c:
            return await asyncio.gather(*(one(i, c) for i in range(n)))

    try:
        outcomes = asyncio.run(main())
    finally:
        stop(proc)
    store = SQLiteStore(tmp_path / "gw.db")
    spent = store.spend(key=key.key_id)
    calls = len(store.calls())
    store.close()
    # the largest call: the workflow's second step, whose prompt holds the first answer (the mock echoes)
    one_call_max = Price(10000.0, 10.0).estimate(Request.of("Again: echo: Say: 价格 x=[1,2]", max_tokens=max_tokens or 512))
    assert spent <= limit + one_call_max, (spent, outcomes.count("ok"), calls)
    assert outcomes.count("429") > 0 and outcomes.count("ok") > 0, outcomes
