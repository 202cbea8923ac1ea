"""The one sync facade: the core is async; scripts, notebooks and the CLI call ``run_sync``.

``run_sync`` runs every coroutine on one private event loop in a daemon thread, for the whole
process. So an adapter's pooled HTTP session lives on one loop across calls (connections are
reused, none is left open by a loop that ended — ``asyncio.run`` per call did both), and it works
where a loop is already running in the caller's thread (Jupyter, an async framework): the caller's
thread waits while the coroutine runs on the private loop. The caller's context variables (a
``spend_scope``, an open run) go with the coroutine. The sessions opened on the private loop are
closed when the process exits (``register_session``), even those of adapters dropped unclosed.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["register_session", "run_sync"]


class _PrivateLoop:
    """The process's private loop and its thread, started on first use (again after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._exit_hook = False

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                t = threading.Thread(target=self._serve, args=(loop, ready), name="turnout-run-sync", daemon=True)
                t.start()
                ready.wait()
                self._loop, self._thread = loop, t
                if not self._exit_hook:
                    atexit.register(self.close)
                    self._exit_hook = True
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def close(self) -> None:
        """Close the sessions opened on the loop, then stop it (at exit; a later ``run_sync`` starts anew)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(_close_sessions(loop), loop).result(timeout=10)
        except Exception:  # noqa: BLE001 - at exit: a session that will not close is the OS's to reclaim
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()


_PRIVATE = _PrivateLoop()
_SESSIONS: dict[asyncio.AbstractEventLoop, list[Any]] = {}  # the private loop's open HTTP sessions


def register_session(loop: asyncio.AbstractEventLoop, session: Any) -> None:
    """An HTTP session (anything with ``closed`` and ``async close()``) opened on ``loop``: if that is
    the private loop, it is held until the loop closes it at exit — so an adapter dropped without
    ``aclose()`` still leaves nothing open (a session on any other loop is its owner's to close)."""
    if loop is _PRIVATE._loop:
        live = _SESSIONS.setdefault(loop, [])
        live[:] = [s for s in live if not s.closed]
        live.append(session)


async def _close_sessions(loop: asyncio.AbstractEventLoop) -> None:
    for s in _SESSIONS.pop(loop, ()):
        if not s.closed:
            await s.close()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code — a script, a notebook cell, a thread —
    on turnout's private loop, and return its result (or raise its exception). From inside a running
    loop the calling thread blocks until it is done: in async code, ``await`` the coroutine instead."""
    if not asyncio.iscoroutine(coro):
        raise TypeError(f"run_sync() takes a coroutine, not {type(coro).__name__}")
    loop = _PRIVATE.get()
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # it would wait for itself
        coro.close()
        raise RuntimeError("run_sync() was called from a coroutine already on turnout's loop: await it instead")
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    ctx = contextvars.copy_context()
    tasks: list[asyncio.Task[T]] = []

    def start() -> None:
        task = ctx.run(loop.create_task, coro)  # the task runs in (a copy of) the caller's context
        tasks.append(task)

        def finished(t: asyncio.Task[T]) -> None:
            if t.cancelled():
                done.cancel()
            elif t.exception() is not None:
                done.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                done.set_result(t.result())

        task.add_done_callback(finished)

    loop.call_soon_threadsafe(start)
    try:
        return done.result()
    except BaseException:
        if not done.done():  # Ctrl-C while waiting: stop the coroutine too
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in tasks])
        raise
