"""The OpenAI-compatible adapter against a real third-party server: llama.cpp's own, on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from turnout import LocalLLM, OpenAICompatible, Request, ResponseFormat

pytestmark = pytest.mark.local_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_url():
    llm = LocalLLM(context=1024, parallel=1, http_port=free_port())
    url = llm.http_url
    yield url
    llm._server = None


async def test_complete_against_llama_cpp(llama_url):
    m = OpenAICompatible("qwen", base_url=llama_url)
    c = await m.complete(Request.of("What is 12 + 30? Answer with the number only.", temperature=0, max_tokens=8))
    assert "42" in c.text and c.usage.input_tokens > 10 and c.usage.output_tokens > 0
    await m.aclose()


async def test_stream_and_schema_against_llama_cpp(llama_url):
    m = OpenAICompatible("qwen", base_url=llama_url)
    chunks = [c async for c in m.stream(Request.of("Count from one to three.", temperature=0, max_tokens=20))]
    assert chunks[-1].done and chunks[-1].usage.output_tokens > 0 and "".join(c.delta for c in chunks)
    schema = {"type": "object", "properties": {"route": {"type": "string", "enum": ["billing", "technical"]}}, "required": ["route"]}
    c = await m.complete(Request.of("Route: my card was charged twice", temperature=0, max_tokens=20,
                                    response_format=ResponseFormat.json_schema(schema)))
    assert c.json()["route"] in ("billing", "technical")
    await m.aclose()
