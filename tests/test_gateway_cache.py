"""The response cache on the gateway, started as users start it (``turnout serve``), with the official
openai client: a key opts in with ``turnout keys create --cache-ttl``, a hit says so in
``x-turnout-cache`` and reaches nothing upstream (the mock server counts), another key never gets it,
streams are served from it too, and it is counted in ``/metrics``, the store and ``turnout report``.
With ``--redis`` two replicas answer from one cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from test_gateway import start_server, stop

from turnout.store import SQLiteStore

REDIS_URL = os.environ.get("TURNOUT_TEST_REDIS_URL")
MSG = [{"role": "user", "content": "what is the refund window?"}]


def _upstream_count(upstream: str) -> int:
    return httpx.get(upstream.removesuffix("/v1") + "/_mock/stats", timeout=5).json()["count"]


def _cli(tmp: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "turnout", *args, "--db", str(tmp / "gw.db")], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip()


def _rows_when(db: Path, n: int) -> list:
    """The server's call rows once all ``n`` are written (its flusher writes every 0.2 s; bounded wait)."""
    deadline = time.monotonic() + 60
    while True:
        store = SQLiteStore(db)
        rows = [c for c in store.calls() if c.model == "cheap"]
        store.close()
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _files(tmp: Path, upstream: str) -> None:
    (tmp / "models.yaml").write_text(f"models:\n  cheap: {{adapter: openai, base_url: '{upstream}', price: {{input: 1000, output: 1000}}, "
                                     "policies: {retry: {attempts: 1}}}\n")
    (tmp / "wf.yaml").write_text("name: w\nsteps:\n  - call: {model: cheap, prompt: '{input}', max_tokens: 10}\n")


@pytest.fixture
def served(tmp_path, mock_process):
    _files(tmp_path, mock_process)
    keys = {"cached": _cli(tmp_path, "keys", "create", "cached", "-m", "*", "--cache-ttl", "600"),
            "plain": _cli(tmp_path, "keys", "create", "plain", "-m", "*")}
    proc, base = start_server(tmp_path, mock_process)
    try:
        yield {"base": base, "keys": keys, "tmp": tmp_path, "upstream": mock_process}
    finally:
        stop(proc)


def _ask(base: str, secret: str, *, stream: bool = False, temperature: float | None = 0, msg: list | None = None) -> tuple[str, str | None]:
    c = openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=0, timeout=20)
    kw = {} if temperature is None else {"temperature": temperature}
    if stream:
        with c.chat.completions.with_streaming_response.create(model="cheap", messages=msg or MSG, stream=True, **kw) as r:
            text = "".join(ch.choices[0].delta.content or "" for ch in r.parse() if ch.choices)
            return text, r.headers.get("x-turnout-cache")
    raw = c.chat.completions.with_raw_response.create(model="cheap", messages=msg or MSG, **kw)
    return raw.parse().choices[0].message.content, raw.headers.get("x-turnout-cache")


def test_a_key_that_opts_in_is_answered_from_the_cache(served):
    s = served
    n0 = _upstream_count(s["upstream"])
    text, first = _ask(s["base"], s["keys"]["cached"])
    again, hit = _ask(s["base"], s["keys"]["cached"])
    streamed, stream_hit = _ask(s["base"], s["keys"]["cached"], stream=True)
    assert first is None and hit == "hit" and stream_hit == "hit" and again == text == streamed
    assert _upstream_count(s["upstream"]) == n0 + 1  # three answers, one upstream call
    # another key, the same words: its own call, never the first key's entry
    assert _ask(s["base"], s["keys"]["plain"])[1] is None and _ask(s["base"], s["keys"]["plain"])[1] is None
    # a sampled request (temperature unset) is never cached by default
    assert _ask(s["base"], s["keys"]["cached"], temperature=None)[1] is None
    assert _upstream_count(s["upstream"]) == n0 + 4
    metrics = httpx.get(s["base"] + "/metrics", timeout=5).text
    assert 'turnout_model_cache_hits_total{model="cheap"} 2.0' in metrics
    rows = _rows_when(s["tmp"] / "gw.db", 6)  # 6 calls answered: 3 for the cached key, 2 plain, 1 sampled
    hits = [c for c in rows if c.cached]
    assert len(hits) == 2 and all(c.cost_usd == 0 and c.saved_usd > 0 for c in hits)
    report = json.loads(subprocess.run([sys.executable, "-m", "turnout", "report", "--by", "model", "--json", "--db",
                                        str(s["tmp"] / "gw.db")], capture_output=True, text=True, timeout=120, check=True).stdout)
    row = next(r for r in report if r["model"] == "cheap")
    assert row["cache_hit_rate"] == pytest.approx(2 / len(rows), abs=1e-4)
    assert row["saved_usd"] == pytest.approx(sum(c.saved_usd for c in hits), abs=1e-8)


def test_key_cache_options_are_checked(tmp_path):
    out = subprocess.run([sys.executable, "-m", "turnout", "keys", "create", "k", "-m", "*", "--cache-semantic", "3", "--db",
                          str(tmp_path / "k.db")], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "semantic" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(not REDIS_URL, reason="no Redis (set TURNOUT_TEST_REDIS_URL; .ci/run starts one)")
def test_two_replicas_answer_from_one_cache_in_redis(tmp_path, mock_process):
    _files(tmp_path, mock_process)
    msg = [{"role": "user", "content": f"what is the refund window? ({os.urandom(4).hex()})"}]  # Redis outlives the test
    secret = _cli(tmp_path, "keys", "create", "cached", "-m", "*", "--cache-ttl", "600")
    a, base_a = start_server(tmp_path, mock_process, "--redis", REDIS_URL)
    b, base_b = start_server(tmp_path, mock_process, "--redis", REDIS_URL)
    try:
        n0 = _upstream_count(mock_process)
        text, first = _ask(base_a, secret, msg=msg)
        again, hit = _ask(base_b, secret, msg=msg)
        assert first is None and hit == "hit" and again == text
        assert _upstream_count(mock_process) == n0 + 1
    finally:
        stop(a)
        stop(b)


def test_workers_without_redis_are_refused(tmp_path):
    (tmp_path / "models.yaml").write_text("models:\n  m: {adapter: openai, base_url: 'http://127.0.0.1:9/v1'}\n")
    out = subprocess.run([sys.executable, "-m", "turnout", "serve", "--workers", "2", "--catalog", str(tmp_path / "models.yaml"),
                          "--db", str(tmp_path / "gw.db")], capture_output=True, text=True, timeout=120, env={**os.environ,
                                                                                                          "TURNOUT_REDIS_URL": ""})
    assert out.returncode != 0 and "--workers 2 needs --redis" in out.stderr and "Traceback" not in out.stderr
