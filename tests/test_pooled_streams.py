"""Streams on pooled connections: a stream read to its end gives its connection back to the pool; one
left early closes it; a connection the server forgot without saying so (llama.cpp's server after a
stream) is caught on its next use and the request is sent once more at once — against the
loopback MockServer, which learns to forget connections that way."""

from __future__ import annotations

import asyncio

import pytest

from turnout import Request
from turnout.models.anthropic import AnthropicModel
from turnout.models.openai import OpenAICompatible
from turnout.testing import MockServer


def _openai(srv: MockServer) -> OpenAICompatible:
    return OpenAICompatible("mock", base_url=srv.url, api_key="sk-test")


async def _text(m, req: Request) -> str:
    return "".join([c.delta async for c in m.stream(req)])


async def test_streams_reuse_one_pooled_connection():
    async with MockServer() as srv:
        m = _openai(srv)
        try:
            outs = [await _text(m, Request.of(f"stream {i}")) for i in range(10)]
            assert outs == [f"echo: stream {i}" for i in range(10)]
            assert srv.connections == 1 and m._http.stale_retries == 0  # one connection, kept in the pool
        finally:
            await m.aclose()


async def test_concurrent_streams_open_about_as_many_connections_as_run_at_once():
    async with MockServer(latency=0.01) as srv:
        m = _openai(srv)
        try:
            for _ in range(5):
                outs = await asyncio.gather(*(_text(m, Request.of(f"q {i}")) for i in range(8)))
                assert outs == [f"echo: q {i}" for i in range(8)]
            assert srv.connections <= 8 and srv.count == 40 and m._http.stale_retries == 0
        finally:
            await m.aclose()


@pytest.mark.parametrize("adapter", ["openai", "anthropic"])
async def test_a_connection_the_server_forgot_after_a_stream_is_sent_again_once(adapter):
    async with MockServer(stale_after="stream") as srv:
        m = _openai(srv) if adapter == "openai" else AnthropicModel("claude-mock", base_url=srv.root, api_key="sk-ant-test")
        try:
            assert await _text(m, Request.of("first")) == "echo: first"
            assert await _text(m, Request.of("second")) == "echo: second"  # its pooled connection was dead
            c = await m.complete(Request.of("third"))  # so was the second stream's
            assert c.text == "echo: third"
            assert srv.stale_drops == 2 and m._http.stale_retries == 2  # each caught once, at once
            assert srv.count == 3  # no answer generated twice
        finally:
            await m.aclose()


async def test_a_stream_left_early_does_not_poison_the_pool():
    async with MockServer(chunk_delay=0.001) as srv:
        m = _openai(srv)
        try:
            g = m.stream(Request.of("one two three four five six seven eight"))
            async for _ in g:
                break  # the caller stops after the first chunk
            await g.aclose()
            task = asyncio.create_task(_text(m, Request.of("a b c d e f g h i j k l m n o p")))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            outs = [await _text(m, Request.of(f"after {i}")) for i in range(5)]
            assert outs == [f"echo: after {i}" for i in range(5)]
            assert (await m.complete(Request.of("json too"))).text == "echo: json too"
            assert m._http.stale_retries == 0  # nothing half-read was handed out again
        finally:
            await m.aclose()


async def test_an_idle_keep_alive_connection_the_server_dropped_is_caught_for_json_too_but_a_new_one_never_resent():
    from turnout.errors import ProviderUnavailable

    async with MockServer(stale_after="any") as srv:
        m = _openai(srv)
        try:
            assert (await m.complete(Request.of("a"))).text == "echo: a"
            assert (await m.complete(Request.of("b"))).text == "echo: b"  # its pooled connection was dead: sent again
            assert m._http.stale_retries == 1 and srv.count == 2
        finally:
            await m.aclose()
    async with MockServer() as srv:
        m = _openai(srv)
        try:
            srv.fail("reset")  # a connection just opened drops: the server may have the request
            with pytest.raises(ProviderUnavailable):
                await m.complete(Request.of("c"))
            assert m._http.stale_retries == 0
        finally:
            await m.aclose()


async def test_a_stream_ends_at_done_even_when_the_server_keeps_the_body_open():
    async with MockServer() as srv:
        m = _openai(srv)
        try:
            srv.fail("linger")  # [DONE], then the body stays open
            chunks = [c async for c in m.stream(Request.of("then silence"))]
            assert chunks[-1].done and "".join(c.delta for c in chunks) == "echo: then silence"  # not waiting for the body's end
            assert await _text(m, Request.of("next")) == "echo: next"  # that connection was closed, not handed out half-read
            assert m._http.stale_retries == 0
        finally:
            await m.aclose()
