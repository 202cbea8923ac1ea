"""Fakes for tests, docs and benchmarks: they live at the model interface boundary.

``ScriptedModel`` and ``FunctionModel`` implement ChatModel, ``FakeEmbedder`` implements Embedder,
and ``MockServer`` is a real OpenAI-compatible (and Anthropic) HTTP server on 127.0.0.1 with
latency and fault injection.
"""

# router specs in tests, benches and docs may say ``embedder: fake`` once the test kit is imported
from ..routing.config import register_embedder as _register_embedder
from ._fakes import FakeEmbedder as FakeEmbedder
from ._fakes import FunctionModel as FunctionModel
from ._fakes import ScriptedModel as ScriptedModel
from ._mockserver import FAULT_KINDS as FAULT_KINDS
from ._mockserver import MockServer as MockServer
from ._mockserver import instance_of_schema as instance_of_schema
from ._serve import serve_app as serve_app

_register_embedder("fake", FakeEmbedder)

__all__ = [
    "FAULT_KINDS",
    "FakeEmbedder",
    "FunctionModel",
    "MockServer",
    "ScriptedModel",
    "instance_of_schema",
    "serve_app",
]
