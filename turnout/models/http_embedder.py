"""An ``Embedder`` for any OpenAI-compatible ``/embeddings`` endpoint: OpenAI, vLLM, TEI, Ollama,
llama.cpp's server. On the same aiohttp plumbing as the chat adapter (pooled connections, the key
kept out of reprs and scrubbed from every message, HTTP errors as the same ``ProviderError``s).

Texts go in batches of ``batch_size`` (at most ``concurrency`` batches in flight); rows come back in
input order, L2-normalised, as float32. The name — what embedding caches are keyed by — names the
model and the endpoint, so two encoders never share cached vectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._constants import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT_S, OPENAI_BASE_URL
from .._errors import BadResponse
from .._secrets import register_headers
from .._types import FREE, Price
from ._http import HTTPAdapter

__all__ = ["OpenAIEmbedder"]


class OpenAIEmbedder(HTTPAdapter):
    def __init__(
        self,
        model: str,
        *,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        name: str | None = None,
        dimensions: int | None = None,
        batch_size: int = 128,
        concurrency: int = 4,
        price: Price = FREE,
        timeout: float = DEFAULT_TIMEOUT_S,
        pool_size: int = DEFAULT_POOL_SIZE,
        require_key: bool | None = None,
        headers: dict[str, str] | None = None,
        trust_env: bool = True,
        proxy: str | None = None,
    ) -> None:
        register_headers(headers)
        super().__init__(model, base_url=base_url, path="/embeddings", name=name or f"{model}@{base_url.rstrip('/')}", price=price,
                         api_key=api_key, api_key_env=api_key_env, trust_env=trust_env, require_key=require_key, pool_size=pool_size,
                         timeout=timeout, proxy=proxy, headers=dict(headers or {}), auth=lambda k: {"Authorization": f"Bearer {k}"})
        self.dimensions = dimensions
        self.dim = dimensions or 0  # learnt from the first answer when not given
        self.batch_size = max(1, batch_size)
        self.concurrency = max(1, concurrency)
        self.request_timeout = timeout
        self.tokens = 0  # prompt tokens the endpoint reported
        self.cost_usd = 0.0

    def _parse(self, n: int) -> Any:
        def parse(doc: Any, latency_s: float) -> tuple[np.ndarray, int]:
            data = doc.get("data") if isinstance(doc, dict) else None
            if not isinstance(data, list) or len(data) != n:
                raise BadResponse(f"expected {n} embeddings, got {len(data) if isinstance(data, list) else 'none'}", model=self.name)
            try:
                rows = sorted(data, key=lambda d: int(d.get("index", 0)))
                m = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
            except (TypeError, KeyError, ValueError):
                raise BadResponse("embeddings are not lists of numbers", model=self.name) from None
            if m.ndim != 2 or (self.dim and m.shape[1] != self.dim):
                raise BadResponse(f"embedding width {m.shape[-1]} is not {self.dim}", model=self.name)
            u = doc.get("usage") or {}
            tokens = int(u.get("prompt_tokens") or u.get("total_tokens") or 0)
            self.tokens += tokens
            self.cost_usd += self.price.input_per_m * tokens / 1e6
            return m, tokens

        return parse

    async def embed_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """One request: the rows (L2-normalised, input order) and the prompt tokens the endpoint
        reported. What the embedding policies (``turnout.policies.embedding``) call per batch."""
        body: dict[str, Any] = {"model": self.model, "input": [t or " " for t in texts], "encoding_format": "float"}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        m, tokens = await self._post(body, self.request_timeout, self._parse(len(texts)))
        self.dim = m.shape[1]
        m /= np.clip(np.linalg.norm(m, axis=1, keepdims=True), 1e-12, None)
        return m, tokens

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        sem = asyncio.Semaphore(self.concurrency)

        async def batch(part: Sequence[str]) -> np.ndarray:
            async with sem:
                return (await self.embed_batch(part))[0]

        parts = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(await asyncio.gather(*(batch(p) for p in parts)))
