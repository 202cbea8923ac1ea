"""The gateway, started the way a user starts it (``turnout serve`` in its own process) in front of a
loopback mock upstream, driven by the official ``openai`` client: non-streaming, streaming,
errors, keys and scopes, budgets, workflows, runs and feedback, metrics, mid-stream failures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from turnout.server.keys import KeyRing
from turnout.store import SQLiteStore

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: Path, upstream: str, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``turnout serve`` as a user starts it; its stderr (banner, access log) goes to ``tmp/serve.log``
    — a file, not a pipe nobody reads, which a long test's access log would fill and block."""
    port = free_port()
    log = (tmp / "serve.log").open("a")
    proc = subprocess.Popen([sys.executable, "-m", "turnout", "serve", "--port", str(port), "--catalog", str(tmp / "models.yaml"),
                             "--db", str(tmp / "gw.db"), "--workflow", str(tmp / "wf.yaml"), *extra],
                            stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
    log.close()  # the child holds its own copy
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a bound, not a timing window: a loaded 2-core machine imports slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"turnout serve exited: {(tmp / 'serve.log').read_text()}")
        try:
            if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("turnout serve did not become healthy in 120 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def setup(tmp_path: Path, mock_process: str) -> Iterator[dict]:
    (tmp_path / "models.yaml").write_text(
        "models:\n"
        f"  cheap: {{adapter: openai, base_url: '{mock_process}', price: {{input: 1, output: 2}}, tier: small, "
        "policies: {retry: {attempts: 1}}}\n"
        f"  strong: {{adapter: openai, base_url: '{mock_process}', price: {{input: 10, output: 20}}, tier: large, "
        "policies: {retry: {attempts: 1}}}\n"
        f"  flaky: {{adapter: openai, base_url: '{mock_process}', price: {{input: 1, output: 2}}, "
        "policies: {retry: {attempts: 1}, fallback: [cheap]}}\n"
        "auto: {tiers: {small: [cheap], large: [strong]}}\n"
    )
    (tmp_path / "wf.yaml").write_text(
        "name: shout\nsteps:\n  - name: a\n    call: {model: cheap, prompt: 'Say: {input}', max_tokens: 20}\n")
    store = SQLiteStore(tmp_path / "gw.db")
    ring = KeyRing(store)
    keys = {
        "all": ring.create("all", models=["*"], workflows=["*"])[0],
        "cheap-only": ring.create("cheap-only", models=["cheap"])[0],
        "poor": ring.create("poor", models=["*"], budget_usd=0.0005)[0],
        "slow": ring.create("slow", models=["*"], rpm=2)[0],
    }
    store.close()
    proc, base = start_server(tmp_path, mock_process)
    try:
        yield {"base": base, "keys": keys, "tmp": tmp_path, "upstream": mock_process}
    finally:
        stop(proc)


def client(s: dict, key: str | None = "all") -> openai.OpenAI:
    return openai.OpenAI(base_url=s["base"] + "/v1", api_key=s["keys"][key] if key else "none", max_retries=0, timeout=20)


MSG = [{"role": "user", "content": "hello gateway"}]


def test_openai_client_non_streaming_and_headers(setup):
    raw = client(setup).chat.completions.with_raw_response.create(model="cheap", messages=MSG, max_tokens=50)
    c = raw.parse()
    assert c.object == "chat.completion" and c.choices[0].message.role == "assistant"
    assert c.choices[0].message.content and c.choices[0].finish_reason == "stop"
    assert c.usage.prompt_tokens > 0 and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
    assert raw.headers["x-turnout-model"] == "cheap" and float(raw.headers["x-turnout-cost-usd"]) > 0
    assert raw.headers["x-turnout-run-id"] and c.id == "chatcmpl-" + raw.headers["x-turnout-run-id"]


def test_openai_client_streaming_matches_non_streaming(setup):
    cl = client(setup)
    full = cl.chat.completions.create(model="cheap", messages=MSG).choices[0].message.content
    chunks = list(cl.chat.completions.create(model="cheap", messages=MSG, stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_auto_routes_and_says_where(setup):
    raw = client(setup).chat.completions.with_raw_response.create(model="turnout/auto", messages=MSG)
    assert raw.headers["x-turnout-model"] == "cheap" and raw.headers["x-turnout-route"] == "small"
    hard = [{"role": "user", "content": "Analyze the trade-offs step by step, derive the algorithm's complexity, then compare "
                                        "designs and explain why. " * 30}]
    raw = client(setup).chat.completions.with_raw_response.create(model="turnout/auto", messages=hard)
    assert raw.headers["x-turnout-model"] == "strong" and raw.headers["x-turnout-route"] == "large"


def test_keys_scopes_and_errors(setup):
    with pytest.raises(openai.AuthenticationError) as ei:
        client(setup, None).chat.completions.create(model="cheap", messages=MSG)
    assert "invalid API key" in str(ei.value)
    r = httpx.post(setup["base"] + "/v1/chat/completions", json={"model": "cheap", "messages": MSG})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'strong'"):
        client(setup, "cheap-only").chat.completions.create(model="strong", messages=MSG)
    with pytest.raises(openai.NotFoundError, match="unknown model 'gpt-9'"):
        client(setup).chat.completions.create(model="gpt-9", messages=MSG)
    assert [m.id for m in client(setup, "cheap-only").models.list()] == ["cheap"]
    ids = [m.id for m in client(setup).models.list()]
    assert {"cheap", "strong", "flaky", "turnout/auto", "workflow/shout"} <= set(ids)


def test_budget_and_rate_limits_are_429_with_a_clear_message(setup):
    with pytest.raises(openai.RateLimitError) as ei:  # max_tokens 512 at $2/M: the estimate alone is over $0.0005
        client(setup, "poor").chat.completions.create(model="cheap", messages=MSG)
    assert "budget 'key poor' of $0.000500 would be exceeded" in str(ei.value)
    assert ei.value.response.json()["error"]["type"] == "insufficient_quota"
    ok = client(setup, "poor").chat.completions.create(model="cheap", messages=MSG, max_tokens=5)
    assert ok.choices[0].message.content
    slow = client(setup, "slow")
    slow.chat.completions.create(model="cheap", messages=MSG, max_tokens=5)
    slow.chat.completions.create(model="cheap", messages=MSG, max_tokens=5)
    with pytest.raises(openai.RateLimitError) as ei:
        slow.chat.completions.create(model="cheap", messages=MSG, max_tokens=5)
    assert "2 requests/min" in str(ei.value) and int(ei.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"model": "cheap", "messages": ' + b"[" * 80 + b"]" * 80 + b"}", 400, "invalid_json"),  # nested past 64 levels
        (b'{"model": "cheap", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_json"),  # past the parser's own limit
        (b'{"model": "cheap", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "invalid_json"),
        (b"[1, 2]", 400, None),
        (b'{"model": "cheap"}', 400, None),
        (b'{"model": "cheap", "messages": [{"role": "wizard", "content": "x"}]}', 400, None),
        (b'{"model": "cheap", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400, None),
        (b'{"model": "cheap", "messages": [{"role": "user", "content": "x"}], "n": 3, "stream": true}', 400, None),
        (b'{"model": "cheap", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}', 400, None),
    ],
)
def test_bad_requests_get_openai_style_4xx(setup, body, status, code):
    r = httpx.post(setup["base"] + "/v1/chat/completions", content=body,
                   headers={"Authorization": "Bearer " + setup["keys"]["all"], "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error" and "Traceback" not in r.text
    if code:
        assert err["code"] == code


def test_oversized_bodies_and_header_injection(setup):
    h = {"Authorization": "Bearer " + setup["keys"]["all"]}
    big = {"model": "cheap", "messages": [{"role": "user", "content": "x" * 2_100_000}]}
    r = httpx.post(setup["base"] + "/v1/chat/completions", json=big, headers=h)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = httpx.post(setup["base"] + "/v1/chat/completions", json={"model": "cheap\r\nX-Evil: 1", "messages": MSG}, headers=h)
    assert r.status_code == 404 and "x-evil" not in r.headers


def test_workflows_runs_and_feedback(setup):
    cl = client(setup)
    raw = cl.chat.completions.with_raw_response.create(model="workflow/shout", messages=[{"role": "user", "content": "hi"}])
    answer = raw.parse().choices[0].message.content
    assert answer and raw.headers["x-turnout-model"] == "workflow/shout"
    # streamed, a workflow's finished answer is replayed as chunks the official client reads back
    chunks = list(cl.chat.completions.create(model="workflow/shout", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-1].choices[0].finish_reason == "stop"
    h = {"Authorization": "Bearer " + setup["keys"]["all"]}
    r = httpx.post(setup["base"] + "/v1/workflows/shout/runs", json={"input": "hello"}, headers=h, timeout=20)
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["calls"] == 1
    run_id = r.json()["run_id"]
    d = httpx.get(f"{setup['base']}/v1/runs/{run_id}", headers=h).json()
    assert d["run"]["workflow"] == "shout" and "a" in [s["name"] for s in d["steps"]] and len(d["calls"]) == 1
    assert httpx.post(f"{setup['base']}/v1/runs/{run_id}/feedback", json={"score": 1, "labels": {"route": "x"}}, headers=h).json()["ok"]
    other = {"Authorization": "Bearer " + setup["keys"]["cheap-only"]}
    assert httpx.get(f"{setup['base']}/v1/runs/{run_id}", headers=other).status_code == 404  # not its run
    r = httpx.post(setup["base"] + "/v1/workflows/shout/runs", json={"input": "x"}, headers=other)
    assert r.status_code == 403
    store = SQLiteStore(setup["tmp"] / "gw.db")
    assert store.feedback(run_id)[0]["labels"] == {"route": "x"}
    all_id = next(k.key_id for k in KeyRing(store).list() if k.name == "all")
    assert store.spend(key=all_id) > 0  # every request is a run tagged with its key
    store.close()


def test_mid_stream_failure_ends_with_an_error_event(setup):
    httpx.post(setup["upstream"].removesuffix("/v1") + "/_mock/faults", json={"kind": "error_event", "times": 1})
    with pytest.raises(openai.APIError):
        for _ in client(setup).chat.completions.create(model="cheap", messages=MSG, stream=True):
            pass


def test_failure_before_the_first_token_falls_back(setup):
    httpx.post(setup["upstream"].removesuffix("/v1") + "/_mock/faults", json={"kind": "503", "times": 1})
    chunks = list(client(setup).chat.completions.create(model="flaky", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    httpx.post(setup["upstream"].removesuffix("/v1") + "/_mock/faults", json={"kind": "401", "times": 1})
    with pytest.raises(openai.APIStatusError) as ei:  # no fallback declared for cheap: a proper error status, not a 200
        list(client(setup).chat.completions.create(model="cheap", messages=MSG, stream=True))
    assert ei.value.status_code == 502


def test_metrics_health_and_readiness(setup):
    client(setup).chat.completions.create(model="cheap", messages=MSG, max_tokens=5)
    m = httpx.get(setup["base"] + "/metrics").text
    assert "turnout_model_requests_total" in m and 'model="cheap"' in m
    assert httpx.get(setup["base"] + "/readyz").json() == {"status": "ready"}


def test_embeddings_through_the_openai_client(setup):
    e = client(setup).embeddings.create(model="local-embed", input=["a cat", "a dog", "quarterly revenue"])
    vecs = [d.embedding for d in e.data]
    assert len(vecs) == 3 and len(vecs[0]) == 384
    dot = sum(a * b for a, b in zip(vecs[0], vecs[1], strict=True))
    far = sum(a * b for a, b in zip(vecs[0], vecs[2], strict=True))
    assert dot > far


def test_no_auth_only_on_loopback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "turnout", "serve", "--host", "0.0.0.0", "--no-auth", "--db", str(tmp_path / "x.db")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--no-auth is only allowed on a loopback address" in r.stderr


def test_keys_cli_round_trip(tmp_path):
    db = str(tmp_path / "k.db")
    r = subprocess.run([sys.executable, "-m", "turnout", "keys", "create", "bob", "-m", "cheap", "--budget", "5", "--period", "month",
                        "--db", db], capture_output=True, text=True, timeout=60)
    secret = r.stdout.strip()
    assert r.returncode == 0 and secret.startswith("tk-")
    assert secret not in (tmp_path / "k.db").read_bytes().decode("latin-1")  # only the hash is stored
    out = json.loads(subprocess.run([sys.executable, "-m", "turnout", "keys", "list", "--json", "--db", db], capture_output=True,
                                    text=True, timeout=60).stdout)
    assert out[0]["name"] == "bob" and out[0]["budget_usd"] == 5 and not out[0]["revoked"]
    r = subprocess.run([sys.executable, "-m", "turnout", "keys", "create", "nobody", "--db", db], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "give it the models and/or workflows" in r.stderr
    assert subprocess.run([sys.executable, "-m", "turnout", "keys", "revoke", "bob", "--db", db], capture_output=True, timeout=60).returncode == 0
    store = SQLiteStore(db)
    assert KeyRing(store).authenticate(secret) is None
    store.close()


def test_langchain_chat_openai_works_unchanged(setup):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="cheap", base_url=setup["base"] + "/v1", api_key=setup["keys"]["all"], max_retries=0, timeout=20)
    msg = llm.invoke("hello from langchain")
    assert isinstance(msg.content, str) and msg.content
    assert msg.usage_metadata is not None and msg.usage_metadata["total_tokens"] > 0
    streamed = "".join(chunk.content for chunk in llm.stream("hello from langchain"))
    assert streamed == msg.content
