"""A type checker finds turnout after the README's install (`pip install -e '.[test]'`) and reads
its annotations (py.typed): a user's code that imports it is checked against them."""

from __future__ import annotations

import subprocess
import sys


def test_mypy_finds_the_package_and_its_types(tmp_path):
    user = tmp_path / "user.py"
    user.write_text("from turnout import Request, run_sync\n\nok: Request = Request.of('x')\nreveal_type(run_sync)\nwrong: int = Request.of('x')\n")
    p = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental", str(user)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = p.stdout + p.stderr
    assert "import-not-found" not in out and "missing library stubs" not in out, out
    assert "user.py:4: note: Revealed type is \"def [T] (coro: typing.Coroutine[Any, Any, T]) -> T\"" in out, out  # the annotations, not Any
    assert p.returncode == 1 and "user.py:5: error: Incompatible types in assignment" in out and "Found 1 error" in out, out
