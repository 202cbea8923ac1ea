"""`turnout demo`: the README's first command, on the real embedded models (and its plumbing with fakes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rich.console import Console

from turnout.demo import MESSAGES, PROBLEMS, run_demo
from turnout.store import SQLiteStore
from turnout.testing import FakeEmbedder, FunctionModel


async def test_demo_plumbing_with_fakes(tmp_path):
    answers = {q: str(a) for q, a in PROBLEMS}

    def reply(r):
        text = r.messages[-1].content
        for q, a in answers.items():
            if q in text:
                return a
        if r.response_format is not None:
            return '{"route": "general"}'
        return "A summary."

    console = Console(record=True, width=200)
    with SQLiteStore(tmp_path / "d.db") as store:
        out = await run_demo(console, store, model=FunctionModel(reply), embedder=FakeEmbedder())
        assert len(out["routes"]) == len(MESSAGES) and out["sections"] == 4 and out["section_failures"] == 0
        assert out["correct"] == 3 and out["samples_used"] == 9 and out["samples_planned"] == 15  # 3 agreeing of 5 decide
        assert len(store.decisions()) == len(MESSAGES) and len(store.sections(step="summary")) == 4
        assert {r.workflow for r in store.runs()} == {"demo:routing", "demo:sectioning", "demo:voting"}
    text = console.export_text()
    assert "9 samples instead of 15" in text and "3/3 right" in text


@pytest.mark.local_model
def test_turnout_demo_runs_on_the_embedded_models(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
    env["HOME"] = os.environ.get("HOME", "")
    r = subprocess.run([sys.executable, "-m", "turnout", "demo", "--db", str(tmp_path / "demo.db")], capture_output=True, text=True,
                       timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for part in ("1. Routing", "2. Sectioning", "3. Voting", "Report", "samples instead of"):
        assert part in r.stdout
    with SQLiteStore(tmp_path / "demo.db") as store:
        assert len(store.decisions()) == len(MESSAGES)
        assert sum(1 for s in store.sections() if s["status"] == "ok") >= 3
        v = store.verdicts()
        assert len(v) == len(PROBLEMS) and all(x["samples_used"] <= 5 for x in v)
        assert sum(x["answer"] == str(a) for x, (_, a) in zip(v, PROBLEMS, strict=True)) >= 1
