"""The public API is complete, and the shipped fakes behave as documented."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import turnout
from turnout import ChatModel, ConfigError, Request
from turnout.errors import ProviderUnavailable
from turnout.models import Embedder
from turnout.testing import FakeEmbedder, FunctionModel, ScriptedModel


@pytest.mark.parametrize("module", ["turnout", "turnout.models", "turnout.policies", "turnout.routing", "turnout.parallel", "turnout.testing", "turnout.workflows", "turnout.store", "turnout.reports", "turnout.errors"])
def test_all_is_sorted_complete_and_importable(module):
    mod = importlib.import_module(module)
    names = mod.__all__
    assert len(names) == len(set(names)) and names == sorted(names)
    for n in names:
        assert hasattr(mod, n), f"{module}.{n} is in __all__ but missing"
    public = {n for n, v in vars(mod).items() if not n.startswith("_") and not isinstance(v, type(importlib)) and n != "annotations"}
    assert public - set(names) <= {"__version__"}, f"exported but not in __all__: {public - set(names)}"


def test_importing_does_not_load_heavy_runtimes():
    import subprocess
    import sys

    code = "import turnout, sys; print(any(m in sys.modules for m in ('xllamacpp', 'onnxruntime', 'tokenizers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_fakes_satisfy_the_protocols():
    assert isinstance(ScriptedModel(default="x"), ChatModel)
    assert isinstance(FunctionModel(lambda r: "x"), ChatModel)
    assert isinstance(FakeEmbedder(), Embedder)
    assert isinstance(turnout.LocalLLM(), ChatModel) and isinstance(turnout.LocalEmbedder(), Embedder)


async def test_scripted_model_patterns_queue_and_history():
    m = ScriptedModel({r"refund": "billing", r"crash": "technical"}, default="general")
    assert (await m.complete(Request.of("I want a REFUND"))).text == "billing"
    assert (await m.complete(Request.of("app crash"))).text == "technical"
    assert (await m.complete(Request.of("hello"))).text == "general"
    m.enqueue(ProviderUnavailable("down"), "queued")
    with pytest.raises(ProviderUnavailable):
        await m.complete(Request.of("refund"))
    assert (await m.complete(Request.of("refund"))).text == "queued"
    assert [r.messages[-1].content for r in m.history][:2] == ["I want a REFUND", "app crash"]


async def test_scripted_model_without_reply_says_so():
    with pytest.raises(ConfigError, match="no reply for 'nothing matches'"):
        await ScriptedModel({"zzz": "b"}).complete(Request.of("nothing matches"))


async def test_function_model_sync_and_async():
    async def afn(r):
        return r.messages[-1].content.upper()

    assert (await FunctionModel(lambda r: "x" + r.messages[-1].content).complete(Request.of("y"))).text == "xy"
    assert (await FunctionModel(afn).complete(Request.of("abc"))).text == "ABC"


async def test_fake_embedder_is_deterministic_normalised_and_similarity_aware():
    e = FakeEmbedder(dim=128)
    v = await e.embed(["refund my order please", "please refund my order", "the server crashed"])
    assert v.shape == (3, 128) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    assert np.array_equal(v, await e.embed(["refund my order please", "please refund my order", "the server crashed"]))
    with pytest.raises(TypeError):
        await e.embed("one string")


def test_request_validation():
    with pytest.raises(ConfigError):
        Request(())
    r = Request.of("x", stop="END")
    assert r.stop == ("END",) and r.with_(temperature=0.5).temperature == 0.5


def test_run_sync_is_the_sync_facade():
    assert turnout.run_sync(ScriptedModel(default="ok").complete(Request.of("x"))).text == "ok"
