"""What an encoder is, in one schema: a catalog's ``embedders:`` entries and a router spec's inline
``embedder: {type: ...}`` are both an ``EmbedderSpec``, and ``build_embedder`` is the one place a
spec becomes an embedder (the bare encoder; ``turnout.policies.catalog.Catalog.embedder`` adds the
policies).

- ``type: openai`` — any OpenAI-compatible ``/embeddings`` (OpenAI, vLLM, TEI, Ollama, llama.cpp),
  ``model:`` required;
- ``type: onnx`` — an exported sentence-transformer in a directory (``path:`` with model.onnx and
  tokenizer.json);
- ``type: local`` — the embedded MiniLM (``local-minilm``, always present in a catalog).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._constants import DEFAULT_EMBEDDER, OPENAI_BASE_URL
from .._errors import ConfigError
from .._types import Price
from .catalog import _RateIn, _RetryIn  # a model's retry and rate-limit settings, the same for an encoder

__all__ = ["EmbedderPolicies", "EmbedderSpec", "build_embedder"]


class EmbedderPolicies(BaseModel):
    """The policies a catalog embedder runs under, per request it sends (one batch)."""

    model_config = ConfigDict(extra="forbid")
    retry: _RetryIn = _RetryIn()
    rate_limit: _RateIn | None = None  # rpm counts requests (batches), tpm input tokens
    max_concurrency: int = Field(4, ge=1, description="batches in flight at once")


class _EmbedPriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = Field(0.0, ge=0, description="USD per 1M input tokens")


class EmbedderSpec(BaseModel):
    """One encoder: ``type`` and its settings, its price, the data classes (and region) it may
    receive under the catalog's compliance policy, and its policies."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["openai", "onnx", "local"]
    model: str = ""
    base_url: str = OPENAI_BASE_URL
    api_key_env: str | None = "OPENAI_API_KEY"
    dimensions: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1, le=4096)
    timeout: float = Field(60.0, gt=0)
    path: str = ""
    name: str | None = Field(None, description="what embedding caches are keyed by (default: model@base_url, or the directory)")
    price: _EmbedPriceIn = _EmbedPriceIn()
    data_classes: list[str] = ["*"]
    region: str = ""
    policies: EmbedderPolicies = EmbedderPolicies()

    @model_validator(mode="after")
    def _needs(self) -> EmbedderSpec:
        if self.type == "openai" and not self.model:
            raise ValueError("an openai embedder needs model:")
        if self.type == "onnx" and not self.path:
            raise ValueError("an onnx embedder needs path: (a directory with model.onnx and tokenizer.json)")
        return self

    @property
    def remote(self) -> bool:
        return self.type == "openai"


def build_embedder(spec: EmbedderSpec, *, trust_env: bool = True, base_dir: Any = None) -> Any:
    """The bare encoder a spec describes (no policies). ``base_dir`` resolves a relative onnx
    ``path:`` (the directory of the file that names it)."""
    if spec.type == "openai":
        from .http_embedder import OpenAIEmbedder

        return OpenAIEmbedder(spec.model, base_url=spec.base_url, api_key_env=spec.api_key_env, dimensions=spec.dimensions,
                              batch_size=spec.batch_size, concurrency=spec.policies.max_concurrency, name=spec.name,
                              price=Price(spec.price.input, 0.0), timeout=spec.timeout, trust_env=trust_env)
    from .embedder import LocalEmbedder

    if spec.type == "local":
        return LocalEmbedder(name=spec.name or DEFAULT_EMBEDDER)
    from pathlib import Path

    d = Path(spec.path)
    if not d.is_absolute() and base_dir is not None:
        d = Path(base_dir) / d
    if not d.is_dir():
        raise ConfigError(f"path: {spec.path!r} is not a directory (an exported ONNX sentence-transformer: model.onnx + tokenizer.json)")
    return LocalEmbedder.from_directory(d, name=spec.name)
