"""The CLI, driven as a user would: through typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from turnout.cli import app

runner = CliRunner()


@pytest.fixture
def catalog(tmp_path, mock_process):
    p = tmp_path / "models.yaml"
    p.write_text(f"models:\n  mock:\n    adapter: openai\n    base_url: {mock_process}\n    price: {{input: 1.0, output: 2.0}}\n    tier: small\n")
    return p


def test_models_lists_the_catalog(catalog):
    r = runner.invoke(app, ["models", "--catalog", str(catalog)])
    assert r.exit_code == 0, r.output
    assert "local" in r.output and "mock" in r.output and "in-process" in r.output
    r = runner.invoke(app, ["models", "--json", "--catalog", str(catalog)])
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert rows["mock"]["price_input_per_m"] == 1.0 and rows["local"]["where"].startswith("in-process")


def test_chat_streams_from_a_catalog_model(catalog):
    r = runner.invoke(app, ["chat", "--model", "mock", "--catalog", str(catalog), "hello from the cli"])
    assert r.exit_code == 0, r.output
    assert "echo: hello from the cli" in r.output


def test_chat_json_output(catalog):
    r = runner.invoke(app, ["chat", "-m", "mock", "--catalog", str(catalog), "--json", "--system", "sys", "hi"])
    doc = json.loads(r.output)
    assert doc["text"] == "echo: hi" and doc["usage"]["input_tokens"] == 2 and doc["cost_usd"] > 0


def test_chat_with_schema_file(catalog, tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}))
    r = runner.invoke(app, ["chat", "-m", "mock", "--catalog", str(catalog), "--json", "--schema", str(schema), "x"])
    assert json.loads(json.loads(r.output)["text"]) == {"ok": True}


def test_catalog_from_environment(catalog, monkeypatch):
    monkeypatch.setenv("TURNOUT_CATALOG", str(catalog))
    r = runner.invoke(app, ["chat", "-m", "mock", "env works"])
    assert r.exit_code == 0 and "echo: env works" in r.output


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["chat", "-m", "nope", "hi"], 2, "unknown model 'nope'; known models: local"),
        (["chat", "--schema", "/nonexistent.json", "hi"], 2, "/nonexistent.json"),
        (["models", "--catalog", "/nonexistent.yaml"], 2, "cannot read the catalog"),
    ],
)
def test_errors_are_one_clear_line(args, code, text):
    r = runner.invoke(app, args)
    assert r.exit_code == code
    assert text in r.output and "Traceback" not in r.output


def test_provider_failure_exits_1_with_the_reason(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("models:\n  dead:\n    adapter: openai\n    base_url: http://127.0.0.1:9/v1\n    policies: {retry: {attempts: 1}}\n")
    r = runner.invoke(app, ["chat", "-m", "dead", "--catalog", str(p), "hi"])
    assert r.exit_code == 1 and "ProviderUnavailable" in r.output


@pytest.mark.local_model
def test_turnout_chat_answers_from_the_embedded_model_with_no_key():
    """The README's first command: a real process, no key, default model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    out = subprocess.run(
        [sys.executable, "-m", "turnout", "chat", "What is 12 + 30? Answer with the number only."],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "42" in out.stdout
    assert "local" in out.stderr and "tokens" in out.stderr


def test_chat_can_trace_to_the_store_for_reports(catalog, tmp_path):
    db = tmp_path / "t.db"
    for q in ("one", "two"):
        assert runner.invoke(app, ["chat", "-m", "mock", "--catalog", str(catalog), "--db", str(db), q]).exit_code == 0
    rows = json.loads(runner.invoke(app, ["report", "--db", str(db), "--json"]).output)
    assert rows[0]["model"] == "mock" and rows[0]["calls"] == 2 and rows[0]["cost_usd"] > 0
