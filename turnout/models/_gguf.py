"""The tokenizer inside a GGUF file, rebuilt as a ``tokenizers.Tokenizer`` to count tokens exactly.

xllamacpp's in-process server has no tokenize call, but a GGUF file carries its tokenizer in the
metadata (``tokenizer.ggml.tokens``, ``.merges``, ``.token_type``, ``.pre``). This module reads only
that metadata (the header, never the tensors: ~0.3 s for Qwen2.5's 152k tokens, where the ``gguf``
package's reader maps every tensor first and takes ~20 s here) and builds a byte-level BPE with the
pre-tokenizer the file names. The result is cached as ``tokenizer.json`` beside the weights, so later
loads take milliseconds.

Supported pre-tokenizers: ``qwen2`` (both shipped models) and ``gpt2``. Anything else returns
``None`` and callers fall back to the documented estimate of 4 characters a token.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from .._errors import ConfigError

__all__ = ["gguf_metadata", "gguf_tokenizer"]

# token pre-tokenizer regexes, as in the upstream tokenizer.json files
_PRE = {
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_CONTROL, _USER_DEFINED = 3, 4


class _Reader:
    def __init__(self, f: BinaryIO, where: str) -> None:
        self.f, self.where = f, where

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        raw = self.f.read(size)
        if len(raw) != size:
            raise ConfigError(f"{self.where}: truncated GGUF header")
        return struct.unpack(fmt, raw)[0]

    def string(self) -> str:
        n = self.take("<Q")
        return self.f.read(n).decode("utf-8", errors="replace")

    def value(self, kind: int, wanted: bool) -> Any:
        if kind == 8:
            return self.string()
        if kind == 9:
            item, count = self.take("<I"), self.take("<Q")
            if item == 8:
                strings = [self.string() for _ in range(count)]  # read past them even when not wanted
                return strings if wanted else None
            fmt = _SCALARS.get(item)
            if fmt is None:
                raise ConfigError(f"{self.where}: unsupported GGUF array type {item}")
            size = struct.calcsize(fmt)
            raw = self.f.read(size * count)
            return list(struct.unpack(f"<{count}{fmt[1]}", raw)) if wanted else None
        fmt = _SCALARS.get(kind)
        if fmt is None:
            raise ConfigError(f"{self.where}: unsupported GGUF value type {kind}")
        return self.take(fmt)


def gguf_metadata(path: str | Path, prefix: str = "") -> dict[str, Any]:
    """The metadata key/values of a GGUF file whose key starts with ``prefix`` (tensors are not read)."""
    where = str(path)
    with open(path, "rb") as raw:
        f = _Reader(raw, where)  # type: ignore[arg-type]
        if raw.read(4) != b"GGUF":
            raise ConfigError(f"{where}: not a GGUF file")
        version = f.take("<I")
        if version < 2:
            raise ConfigError(f"{where}: GGUF version {version} is not supported")
        f.take("<Q")  # tensor count
        out: dict[str, Any] = {}
        for _ in range(f.take("<Q")):
            key = f.string()
            wanted = key.startswith(prefix)
            val = f.value(f.take("<I"), wanted)
            if wanted:
                out[key] = val
        return out


def gguf_tokenizer(path: str | Path, cache: Path | None = None) -> Any | None:
    """A ``tokenizers.Tokenizer`` equal to the GGUF file's own, or None when its kind is not supported.

    ``cache`` (default: ``<weights>.tokenizer.json``) keeps the built tokenizer for the next load.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    cache = cache or Path(f"{path}.tokenizer.json")
    if cache.exists():
        return Tokenizer.from_file(str(cache))
    meta = gguf_metadata(path, "tokenizer.ggml.")
    pre = meta.get("tokenizer.ggml.pre", "gpt2" if meta.get("tokenizer.ggml.model") == "gpt2" else None)
    if meta.get("tokenizer.ggml.model") != "gpt2" or pre not in _PRE:
        return None
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    kinds: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, byte_fallback=False))  # type: ignore[arg-type]
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PRE[pre]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    special = [t for t, k in zip(tokens, kinds, strict=False) if k in (_CONTROL, _USER_DEFINED)]
    if special:
        tok.add_special_tokens(special)
    try:
        tmp = cache.with_suffix(".tmp")
        tok.save(str(tmp))
        tmp.replace(cache)
    except OSError:
        pass  # a read-only cache only costs the rebuild next time
    return tok
