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
    # llama.cpp's server closes a connection after a stream without saying so; the pooled request
    # after it finds the connection dead and is sent again once, at once (never more)
    assert m._http.stale_retries <= 1
    more = [c async for c in m.stream(Request.of("Say hi.", temperature=0, max_tokens=5))]
    assert more[-1].done and m._http.stale_retries <= 2
    await m.aclose()


TOKENIZER_TEXTS = [
    "Hello world!", "  leading spaces\n\n\ttabs and\r\nCRLF", "Numbers 1234567 and 3.14159, -42 and 1,000,000",
    "naïve café 東京 emoji 🎉👍🏽", "def f(x):\n    return x**2  # comment\n", "I'm sure you've they'll WE'D",
    "<|im_start|>user\nhi<|im_end|>", "a" * 300, "ÅÄÖ Ω≈ç√ ﬁ ligature e\u0301 (combining)", "tab\tand\u00a0nbsp  \n \n",
]


async def test_the_rebuilt_tokenizer_matches_llama_cpp_token_for_token(llama_url, tmp_path):
    """LocalLLM.count_tokens uses the GGUF's tokenizer rebuilt in Python; llama.cpp's /tokenize is the reference."""
    import json
    from pathlib import Path

    import aiohttp

    from turnout.models._gguf import gguf_tokenizer
    from turnout.models._weights import QWEN_05B, ensure_gguf

    readme = (Path(__file__).parents[1] / "README.md").read_text()[:6000]
    tok = gguf_tokenizer(ensure_gguf(QWEN_05B), cache=tmp_path / "tok.json")
    assert tok is not None and (tmp_path / "tok.json").exists()
    base = llama_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as s:
        for text in [*TOKENIZER_TEXTS, readme]:
            async with s.post(f"{base}/tokenize", json={"content": text, "parse_special": True},
                              timeout=aiohttp.ClientTimeout(total=30)) as r:
                ref = json.loads(await r.read())["tokens"]
            assert tok.encode(text, add_special_tokens=False).ids == ref, text[:40]
    assert LocalLLM().count_tokens("12345") == 5  # Qwen splits digits: the 4-chars estimate would say 2
