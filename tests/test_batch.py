"""`turnout batch`: invalid lines reported by number, output in input order, and resume after kill -9
with every item exactly once and finished items never re-billed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys

from typer.testing import CliRunner

from turnout.cli import app
from turnout.workflows.batch import read_items

runner = CliRunner()

WF = "name: upper\nsteps:\n  - call: {prompt: 'Item: {input}'}\n"


def test_read_items_reports_invalid_lines_and_keys(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('"a"\n\n{"id": "x", "text": "b"}\nnot json\n[1, 2]\n"a"\n{"id": "x", "text": "dup"}\n{"id": 7, "input": "c"}\n')
    items, bad = read_items(p)
    assert [(i.line, i.input) for i in items] == [(1, "a"), (3, {"id": "x", "text": "b"}), (6, "a"), (8, "c")]
    assert items[2].key == items[0].key + "#2" and items[1].key == "x" and items[3].key == "7"
    assert [n for n, _ in bad] == [4, 5, 7] and "duplicate id 'x' (first on line 3)" in bad[2][1]


def _files(tmp_path, url, n):
    (tmp_path / "wf.yaml").write_text(WF)
    (tmp_path / "models.yaml").write_text(f"models:\n  local: {{adapter: openai, base_url: '{url}', model: m}}\n")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"i{k}", "text": f"t{k}"}) + "\n" for k in range(n)) + "oops\n")
    return ["batch", str(tmp_path / "wf.yaml"), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
            "--db", str(tmp_path / "b.db"), "-c", str(tmp_path / "models.yaml"), "-n", "2"]


def test_strict_refuses_before_running(tmp_path, mock_process):
    args = _files(tmp_path, mock_process, 3)
    r = runner.invoke(app, [*args, "--strict"])
    assert r.exit_code == 2 and "in.jsonl:4: skipped" in r.output and "nothing was run" in r.output
    assert not (tmp_path / "out.jsonl").exists()


def _done(db) -> int:
    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT COUNT(*) FROM batch_items WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _as_from_a_terminal() -> None:
    """Ctrl-C's default in the child, as in a user's terminal. A test run started in the background
    by a shell without job control (CI scripts, `cmd &`) ignores SIGINT, and every child inherits
    that: the batch would (rightly) ignore the test's Ctrl-C and never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _exit(proc, timeout: float = 120) -> str:
    """The process's stderr once it has exited; if it has not within ``timeout`` s, fail with the
    stack of every one of its threads (faulthandler, on SIGABRT) so a hang says where it hangs."""
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        if proc.returncode is None:
            proc.send_signal(signal.SIGABRT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        raise AssertionError(f"turnout batch did not exit in {timeout:g} s; its threads:\n{err.decode()[-8000:]}") from None
    return err.decode()


async def _start_batch_until_done(tmp_path, url, n, done, busy_timeout=None):
    """Start ``turnout batch`` on n items as a subprocess; return once ``done`` items are finished (≤ ~60 s)."""
    cmd = [sys.executable, "-m", "turnout", *_files(tmp_path, url, n)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
    if busy_timeout is not None:  # how long its writes wait for another process's lock before failing
        env["TURNOUT_DB_BUSY_TIMEOUT"] = busy_timeout
    env["PYTHONFAULTHANDLER"] = "1"  # a hung run can be asked for its stacks (see _exit)
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                                                preexec_fn=_as_from_a_terminal)
    for _ in range(600):
        if _done(tmp_path / "b.db") >= done:
            break
        await asyncio.sleep(0.1)
    return cmd, env, proc


async def test_resume_after_kill_runs_each_item_exactly_once(tmp_path):
    from turnout.testing import MockServer

    n = 12
    async with MockServer(latency=0.05) as srv:
        srv.hold_after(4)  # by event, not by timing: the kill lands while items are in flight
        cmd, env, proc = await _start_batch_until_done(tmp_path, srv.url, n, 4)
        await asyncio.wait_for(srv.wait_held(2), 60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        srv.release(drop=True)  # the held requests' client is dead
        first_done, calls_before = _done(tmp_path / "b.db"), srv.count
        assert 4 <= first_done < n, "the batch should have been killed part-way"
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        text = err.decode()
        assert f"{first_done} of {n} items already done" in text and "in.jsonl:13: skipped" in text
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"i{k}" for k in range(n)]  # each once, in input order
    assert all(r["output"] == f"echo: Item: t{k}" and r["status"] == "ok" for k, r in enumerate(rows))
    # finished items were not called again: only the unfinished ones (and at most the 2 in flight at the kill) were
    assert srv.count - calls_before == n - first_done
    assert calls_before <= first_done + 2


async def test_ctrl_c_writes_what_is_done_and_the_same_command_continues(tmp_path):
    from turnout.testing import MockServer

    n = 12
    async with MockServer(latency=0.05) as srv:
        srv.hold_after(4)  # 4 items are answered; the next ones wait: the batch is certainly mid-way
        cmd, env, proc = await _start_batch_until_done(tmp_path, srv.url, n, 4)
        await asyncio.wait_for(srv.wait_held(2), 60)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        text = await _exit(proc)
        assert proc.returncode == 130, text
        first_done = _done(tmp_path / "b.db")
        assert 4 <= first_done < n and f"interrupted: {first_done} of {n} done" in " ".join(text.split())
        written = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert sum(r["status"] == "ok" for r in written) == first_done  # what was done is not lost
        srv.release(drop=True)
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"i{k}" for k in range(n)] and all(r["status"] == "ok" for r in rows)


async def test_a_second_copy_of_a_running_batch_refuses_and_bills_nothing(tmp_path):
    from turnout.testing import MockServer

    n = 12
    async with MockServer(latency=0.05) as srv:
        srv.hold_after(4)  # the first copy is certainly mid-way (holding the batch) while the second starts
        cmd, env, first = await _start_batch_until_done(tmp_path, srv.url, n, 4)
        await asyncio.wait_for(srv.wait_held(2), 60)
        calls = srv.count
        second = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(second.communicate(), 120)
        text = " ".join(err.decode().split())
        assert second.returncode == 2, text
        assert f"already being run by process {first.pid}" in text and "Traceback" not in text
        assert srv.count == calls  # the second copy called nothing
        srv.release()
        _, err = await asyncio.wait_for(first.communicate(), 120)
        assert first.returncode == 0, err.decode()
    assert srv.count == n  # every item billed once, by the first copy alone
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"i{k}" for k in range(n)] and all(r["status"] == "ok" for r in rows)
    again = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(again.communicate(), 120)
    assert again.returncode == 0 and srv.count == n, err.decode()  # the lease was released: a rerun is free to go (and has nothing to do)


async def test_a_store_locked_mid_batch_is_one_clean_line_and_loses_nothing(tmp_path):
    """Another process takes the store's write lock while items are in flight and keeps it until the
    batch has given up: one located line (no traceback, no ExceptionGroup), and a rerun after the
    lock is gone finishes the batch without running a finished item again."""
    from turnout.testing import MockServer

    n = 12
    async with MockServer(latency=0.05) as srv:
        srv.hold_after(4)
        cmd, env, proc = await _start_batch_until_done(tmp_path, srv.url, n, 4, busy_timeout="1")
        await asyncio.wait_for(srv.wait_held(2), 60)
        lock = sqlite3.connect(tmp_path / "b.db", timeout=60, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # held until the batch has failed: longer than any busy timeout
        done_before = lock.execute("SELECT COUNT(*) FROM batch_items WHERE status = 'done'").fetchone()[0]
        srv.release()  # the held items finish and must record themselves: the store refuses
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        lock.execute("ROLLBACK")
        lock.close()
        text = err.decode()
        assert proc.returncode != 0 and "Traceback" not in text and "ExceptionGroup" not in text, text
        assert "b.db" in text and "locked" in text, text
        calls_before = srv.count
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert srv.count - calls_before <= n - done_before  # what was recorded done is never run again
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"i{k}" for k in range(n)] and all(r["status"] == "ok" for r in rows)
