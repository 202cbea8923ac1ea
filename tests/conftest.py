"""Test guards: no real network, a clean environment, and shared fixtures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from turnout.testing import MockServer

_ENV_PREFIXES = ("OPENAI_", "ANTHROPIC_", "TURNOUT_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
_LOOPBACK = ("127.", "::1", "localhost")
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guard(addr: object) -> None:
    host = addr[0] if isinstance(addr, tuple) else addr
    if isinstance(host, str) and not host.startswith(_LOOPBACK) and not host.startswith("/"):
        raise RuntimeError(f"tests may only talk to loopback; tried to connect to {addr!r}")


def _connect(self: socket.socket, addr: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _guard(addr)
    return _real_connect(self, addr)


def _connect_ex(self: socket.socket, addr: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _guard(addr)
    return _real_connect_ex(self, addr)


@pytest.fixture(autouse=True)
def _no_network_and_clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for k in list(os.environ):
        if k.startswith(_ENV_PREFIXES) and k != "TURNOUT_CACHE_DIR":
            monkeypatch.delenv(k, raising=False)
    # the default store of a command run without --db (chat logs every turn): the test's, never the checkout's
    monkeypatch.setenv("TURNOUT_DB", str(tmp_path / "default-store.db"))
    monkeypatch.setattr(socket.socket, "connect", _connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _connect_ex)
    yield


@pytest.fixture
async def mock_server() -> AsyncIterator[MockServer]:
    async with MockServer() as srv:
        yield srv


@contextmanager
def mock_server_process(*args: str) -> Iterator[str]:
    """The mock server in its own process (``args``: e.g. ``--latency 0.1``). Yields its /v1 URL."""
    proc = subprocess.Popen([sys.executable, "-m", "turnout.testing.mockserver", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("READY "), f"mock server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def mock_process() -> Iterator[str]:
    """The mock server in its own process (for the CLI, which runs its own event loop). Yields its /v1 URL."""
    with mock_server_process() as url:
        yield url
