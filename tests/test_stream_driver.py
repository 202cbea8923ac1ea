"""One stream driver for a policy stack (``policies.base``: ``open_stream``, ``StreamEnd``, ``drive``):
every layer's before- and end-work still happens, in the right order, however the stream ends."""

from __future__ import annotations

import asyncio

import pytest

from turnout import Request
from turnout._errors import ProviderUnavailable
from turnout.policies import Fallback, MemorySink, Traced, Wrapper
from turnout.policies.base import drive
from turnout.policies.ratelimit import Capped
from turnout.testing import FunctionModel, ScriptedModel

REQ = Request.of("tell me a story", temperature=0)


def _wrappers() -> list[type]:
    seen, todo = set(), [Wrapper]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return [c for c in seen if c.__module__.startswith("turnout.")]


def test_every_policy_that_streams_opens_its_stream_too():
    """A layer that overrides ``stream`` but inherits ``open_stream`` would be skipped by the driver."""
    bad = [c.__name__ for c in _wrappers() if "stream" in vars(c) and "open_stream" not in vars(c)]
    assert not bad and len(_wrappers()) >= 8


async def test_a_fallback_over_traced_members_records_the_member_that_streamed():
    sink = MemorySink()
    down = FunctionModel(lambda r: ProviderUnavailable("down", model="a"), name="a")
    up = ScriptedModel(default="once upon a time", name="b")
    chain = Fallback([Traced(down, sink), Traced(up, sink)], names=["a", "b"])
    text = "".join([c.delta async for c in chain.stream(REQ)])
    assert text == "once upon a time"
    assert [(e.model, e.ok, e.stream) for e in sink.events] == [("a", False, True), ("b", True, True)]


async def test_a_cut_stream_releases_what_it_held():
    sem = asyncio.Semaphore(1)
    m = Traced(Capped(ScriptedModel(default="one two three four"), sem), MemorySink())
    agen = m.stream(REQ)
    await agen.__anext__()
    assert sem.locked()  # held while the stream is open
    await agen.aclose()
    assert not sem.locked()  # the caller stopped: released at once, not when collected
    assert [c.delta async for c in m.stream(REQ)]  # and the next stream can take it
    with pytest.raises(ProviderUnavailable):  # failed before its first chunk: released too
        async for _ in Capped(FunctionModel(lambda r: ProviderUnavailable("down", model="x")), sem).stream(REQ):
            pass
    assert not sem.locked()


async def test_drive_calls_each_end_once_innermost_first():
    from turnout.policies.base import StreamEnd, open_stream

    log: list[str] = []

    class End(StreamEnd):
        each_chunk = True

        def __init__(self, name: str) -> None:
            self.name, self.chunks = name, 0

        def each(self, chunk):
            self.chunks += 1

        async def done(self, chunk):
            log.append(f"done {self.name} after {self.chunks}")

        async def close(self, error):
            log.append(f"close {self.name} {type(error).__name__ if error else None}")

    class Layer(Wrapper):
        def __init__(self, inner, name):
            super().__init__(inner)
            self.label = name

        def stream(self, request):
            return drive(self.open_stream, request)

        async def open_stream(self, request):
            first, rest, ends = await open_stream(self.inner, request)
            ends.append(End(self.label))
            return first, rest, ends

    m = Layer(Layer(ScriptedModel(default="a b c"), "inner"), "outer")
    chunks = [c async for c in m.stream(REQ)]
    assert chunks[-1].done and log == ["done inner after 4", "done outer after 4", "close inner None", "close outer None"]
