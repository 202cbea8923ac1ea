"""The README's first Python example runs as written, on the embedded model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_commands_are_the_two_documented_ones():
    text = README.read_text()
    assert "pip install -e '.[local]' && turnout chat" in text
    assert "pip install -e '.[test]' && python -m pytest" in text


@pytest.mark.local_model
def test_first_python_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(python_blocks()[0])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("42")
    assert "'route': 'billing'" in out.stdout or "'route': '" in out.stdout


@pytest.mark.local_model
def test_routing_example_runs(tmp_path):
    block = next(b for b in python_blocks() if "CascadeRouter" in b)
    script = tmp_path / "routing_example.py"
    script.write_text(block)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("billing ") and "matched" in out.stdout


@pytest.mark.local_model
def test_parallel_example_runs(tmp_path):
    block = next(b for b in python_blocks() if "run_sections" in b)
    script = tmp_path / "parallel_example.py"
    script.write_text(block)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("42 ") and "## Pricing" in out.stdout and lines[-1].startswith("True ")
