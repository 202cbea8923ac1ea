"""``turnout.run_sync`` from a script and from inside a running loop (a notebook): the same pooled
session across calls, nothing left open at exit, the caller's context carried, errors raised.
The script runs as a user runs it, in its own interpreter with warnings shown (``-X dev``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from turnout import ConfigError, Request, run_sync
from turnout._scope import current_scope, spend_scope
from turnout.testing import ScriptedModel

SCRIPT = textwrap.dedent('''
    import asyncio, json, sys, urllib.request
    from turnout import OpenAICompatible, Request, run_sync

    url = sys.argv[1]
    m = OpenAICompatible("m", base_url=url, api_key="sk-x")
    out = [run_sync(m.complete(Request.of("one"))).text, run_sync(m.complete(Request.of("two"))).text]

    async def notebook_cell():  # a loop is running in this thread, as in Jupyter
        return run_sync(m.complete(Request.of("three"))).text

    out.append(asyncio.run(notebook_cell()))
    stats = json.load(urllib.request.urlopen(url.removesuffix("/v1") + "/_mock/stats", timeout=10))
    print(json.dumps({"out": out, "connections": stats["connections"]}))
    # no aclose(): the session is closed at exit
''')


def test_run_sync_twice_and_inside_a_running_loop_leaves_no_warning(mock_process):
    p = subprocess.run([sys.executable, "-X", "dev", "-c", SCRIPT, mock_process], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    import json

    doc = json.loads(p.stdout)
    assert doc["out"] == ["echo: one", "echo: two", "echo: three"]
    assert doc["connections"] == 1  # one pooled session for all three calls, on one loop
    assert "Unclosed" not in p.stderr and "ResourceWarning" not in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_run_sync_carries_the_callers_context_and_raises_its_errors():
    async def scope_key() -> str | None:
        return current_scope().key

    with spend_scope(key="k-42"):
        assert run_sync(scope_key()) == "k-42"
    assert run_sync(scope_key()) is None

    async def bad() -> None:
        raise ConfigError("from the coroutine")

    with pytest.raises(ConfigError, match="from the coroutine"):
        run_sync(bad())
    with pytest.raises(TypeError, match="takes a coroutine"):
        run_sync(ScriptedModel(default="x"))  # type: ignore[arg-type]
    assert run_sync(ScriptedModel(default="ok").complete(Request.of("x"))).text == "ok"

    async def nested() -> None:  # on turnout's own loop, waiting would wait for itself: said, not a hang
        run_sync(scope_key())

    with pytest.raises(RuntimeError, match="await it instead"):
        run_sync(nested())
