"""The CLI habits users bring from simonw/llm and the official SDKs: ``--version``, help that says
what it means, ``-m openai/NAME`` with only the provider's key, a conversation that is logged and
continued, ``turnout logs``, read commands that refuse a store that is not there, batch rows with
their routes. The CLI runs as a user starts it (a subprocess with a clean environment) against the
loopback MockServer."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tomllib
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from turnout.cli import app
from turnout.testing import MockServer

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no TURNOUT_* nor provider variables from the test run, HOME in tmp."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")}
    return {**keep, "HOME": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "200", **extra}


async def _turnout(tmp_path: Path, *args: str, env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "turnout", *args, cwd=tmp_path, env=env,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def test_version_is_the_package_version():
    r = runner.invoke(app, ["--version"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert r.exit_code == 0 and r.output.strip() == f"turnout {version}"


def _commands(cmd: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if hasattr(cmd, "commands"):  # a group (typer's own click, or click's)
        return [p for name, sub in cmd.commands.items() for p in _commands(sub, (*path, name))]
    return [path]


def test_every_help_page_shows_flags_without_a_type_and_keeps_its_brackets():
    pages = _commands(get_command(app))
    assert len(pages) > 20
    for path in pages:
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300"})
        assert r.exit_code == 0, path
        assert "<bool>" not in r.output, f"turnout {' '.join(path)} --help shows a flag as taking a value"
    r = runner.invoke(app, ["batch", "--help"], env={"COLUMNS": "300"})
    assert "pip install 'turnout[ray]'" in r.output  # rich markup would eat an unescaped [ray]


async def test_chat_with_a_provider_prefix_needs_only_the_providers_key(tmp_path):
    async with MockServer(api_key="sk-only-this") as srv:
        env = _env(tmp_path, OPENAI_API_KEY="sk-only-this", OPENAI_BASE_URL=srv.url)
        rc, out, err = await _turnout(tmp_path, "chat", "-m", "openai/gpt-4o-mini", "hello there", env=env)
        assert rc == 0, err
        assert out.strip() == "echo: hello there"
        assert srv.requests[-1].body["model"] == "gpt-4o-mini"  # the provider's name, without the prefix
        assert srv.requests[-1].headers["Authorization"] == "Bearer sk-only-this"
        assert "no price known" in err and "sk-only-this" not in out + err
        # without the key: one clear line naming the variable, no traceback
        rc, out, err = await _turnout(tmp_path, "chat", "--no-log", "-m", "openai/gpt-4o-mini", "hi",
                                      env=_env(tmp_path, OPENAI_BASE_URL="https://api.example.invalid/v1"))
        assert rc == 2 and "OPENAI_API_KEY" in err and "Traceback" not in err
        # any OpenAI-compatible endpoint by --base-url (loopback: no key needed)
        rc, out, err = await _turnout(tmp_path, "chat", "--no-log", "-m", "served-model", "--base-url", srv.url, "hey",
                                      env=_env(tmp_path, OPENAI_API_KEY="sk-only-this"))
        assert rc == 0 and out.strip() == "echo: hey" and srv.requests[-1].body["model"] == "served-model"
        # an unknown name says what works
        rc, _, err = await _turnout(tmp_path, "chat", "--no-log", "-m", "gpt-4o", "hi", env=env)
        assert rc == 2 and "unknown model 'gpt-4o'" in err and "openai/NAME" in err


async def test_a_conversation_is_logged_continued_and_shown_by_logs(tmp_path):
    async with MockServer() as srv:
        env = _env(tmp_path, OPENAI_API_KEY="sk-x", OPENAI_BASE_URL=srv.url)
        m = ["-m", "openai/m"]
        rc, out, err = await _turnout(tmp_path, "chat", *m, "-s", "Be brief.", env=env, stdin="first question\n\nsecond question\nexit\nnever sent\n")
        assert rc == 0, err
        assert out.splitlines() == ["echo: first question", "echo: second question"]
        turns = [[(x["role"], x["content"]) for x in r.body["messages"]] for r in srv.requests]
        assert turns == [[("system", "Be brief."), ("user", "first question")],
                         [("system", "Be brief."), ("user", "first question"), ("assistant", "echo: first question"),
                          ("user", "second question")]]
        rc, out, err = await _turnout(tmp_path, "chat", *m, "-c", "third", env=env)
        assert rc == 0, err
        assert [(x["role"], x["content"]) for x in srv.requests[-1].body["messages"]] == [
            *turns[1], ("assistant", "echo: second question"), ("user", "third")]
        await _turnout(tmp_path, "chat", *m, "another conversation", env=env)

        rc, out, err = await _turnout(tmp_path, "logs", "--json", "-w", "chat", env=env)
        assert rc == 0, err
        rows = [json.loads(x) for x in out.splitlines()]
        assert [r["input"] for r in rows] == ["first question", "second question", "third", "another conversation"]
        assert rows[2]["output"] == "echo: third" and rows[2]["models"] == ["openai/m"] and rows[2]["status"] == "ok"
        cid = rows[0]["tags"]["conversation"]
        assert {r["tags"]["conversation"] for r in rows[:3]} == {cid} != {rows[3]["tags"]["conversation"]}
        rc, out, _ = await _turnout(tmp_path, "logs", "--json", "--cid", cid, "-n", "2", env=env)
        assert [json.loads(x)["input"] for x in out.splitlines()] == ["second question", "third"]
        rc, out, _ = await _turnout(tmp_path, "logs", "-q", "another", env=env)
        assert rc == 0 and "> another conversation" in out and "echo: another conversation" in out and "first question" not in out
        # --cid continues a named conversation, not the last one
        rc, _, err = await _turnout(tmp_path, "chat", *m, "--cid", cid, "fourth", env=env)
        assert rc == 0, err
        assert [x["content"] for x in srv.requests[-1].body["messages"]][-2:] == ["echo: third", "fourth"]


@pytest.mark.parametrize("cmd", [["report"], ["logs"], ["keys", "list"], ["queue", "list"], ["route", "misroutes"]])
def test_read_commands_refuse_a_store_that_is_not_there(tmp_path, cmd):
    db = tmp_path / "typo.db"
    r = runner.invoke(app, [*cmd, "--db", str(db)])
    assert r.exit_code == 2 and "no such trace store" in r.output and "typo.db" in r.output
    assert not db.exists()  # not created empty


def test_batch_rows_carry_the_routes_taken(tmp_path, mock_process):
    (tmp_path / "wf.yaml").write_text("""
name: triage
routers:
  kind:
    router: rule
    fallback: general
    routes:
      billing: {keywords: [invoice]}
      general: {}
steps:
  - name: answer
    route:
      router: kind
      routes: {billing: {call: {prompt: "Billing: {input}"}}}
      default: {call: {prompt: "General: {input}"}}
""")
    (tmp_path / "models.yaml").write_text(f"models:\n  local: {{adapter: openai, base_url: '{mock_process}', model: m}}\n")
    (tmp_path / "in.jsonl").write_text('"my invoice"\n"hello"\n')
    r = runner.invoke(app, ["batch", str(tmp_path / "wf.yaml"), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                            "--db", str(tmp_path / "b.db"), "-c", str(tmp_path / "models.yaml")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(x["output"], [(d["step"], d["route"]) for d in x["routes"]]) for x in rows] == [
        ("echo: Billing: my invoice", [("answer", "billing")]), ("echo: General: hello", [("answer", "general")])]
