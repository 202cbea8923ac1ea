"""A type checker finds turnout after the README's install (`pip install -e '.[test]'`) and sees
its ``py.typed``: mypy resolves the package (no ``import-not-found``) and treats it as typed (no
``import-untyped``). Imports are not followed (``--follow-imports=skip``): resolving the package
is what the editable install decides, and following them costs ~8 s for nothing more about it."""

from __future__ import annotations

import subprocess
import sys


def test_mypy_finds_the_package_as_typed(tmp_path):
    user = tmp_path / "user.py"
    user.write_text("import turnout\nimport turnout.store.otel\nimport turnout_is_not_installed\n")
    p = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=skip", "--no-incremental", str(user)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = p.stdout + p.stderr
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "user.py:3:" in errors[0] and "import-not-found" in errors[0], out  # only the control fails
    assert "import-untyped" not in out and "py.typed" not in out, out
