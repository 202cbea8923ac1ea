"""Export a sentence-transformer (a Hugging Face directory: config.json, model.safetensors,
tokenizer.json) to the directory ``embedder: {type: onnx, path: DIR}`` loads: ``model.onnx``
(inputs ``input_ids``, ``attention_mask``; output the last hidden state — turnout mean-pools and
normalises) and ``tokenizer.json``. Optionally int8 (dynamic quantisation, ~4× smaller, ~2× faster).

A build-time tool, run once in its own venv; turnout never needs torch at run time:

    python -m venv /tmp/export && /tmp/export/bin/pip install torch transformers onnx onnxscript onnxruntime tokenizers -e .
    /tmp/export/bin/python scripts/export-onnx-encoder.py SRC_DIR OUT_DIR [--int8]

It checks the exported model, loaded by turnout's own ``LocalEmbedder``, against torch on a few
texts of different lengths: a full-precision export that differs (cosine < 0.999) is an error; an
int8 one prints
its cosines (quantisation moves the vectors; judge it by ``turnout route eval``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

TEXTS = ["hi", "set an alarm for 7 tomorrow", "what's the weather like in Paris tomorrow afternoon, will it rain or be sunny?"]


def export(src: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(src).eval()

    class Hidden(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(2, 8, dtype=torch.long)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
    # the dynamo exporter: the TorchScript one bakes shape-dependent code (relative positions) into constants
    torch.onnx.export(Hidden(model), (ids, torch.ones_like(ids)), str(out / "model.onnx"), dynamo=True,
                      input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      dynamic_shapes=(dims, dims), opset_version=18)
    shutil.copy(src / "tokenizer.json", out / "tokenizer.json")


def reference(src: Path) -> list[list[float]]:
    """Mean-pooled, normalised torch embeddings of TEXTS, one text at a time (no padding)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    model, tok = AutoModel.from_pretrained(src).eval(), Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.no_padding()
    vecs = []
    for t in TEXTS:
        ids = torch.tensor([tok.encode(t).ids])
        with torch.no_grad():
            h = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].mean(0)
        vecs.append((h / h.norm()).tolist())
    return vecs


def exported(out: Path) -> list[list[float]]:
    """The same texts through turnout's own loader (``LocalEmbedder.from_directory``: batched,
    padded and pooled exactly as a router will embed them)."""
    from turnout.models.embedder import LocalEmbedder

    return LocalEmbedder.from_directory(out).embed_sync(TEXTS).tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the weights")
    a = ap.parse_args()
    for f in ("config.json", "tokenizer.json"):
        if not (a.src / f).is_file():
            print(f"error: {a.src / f} does not exist (SRC is a Hugging Face model directory)", file=sys.stderr)
            return 2
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) if a.int8 else a.out
        export(a.src, full)
        if a.int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(full / "model.onnx"), str(a.out / "model.onnx"), weight_type=QuantType.QInt8)
            shutil.copy(full / "tokenizer.json", a.out / "tokenizer.json")
        cos = [sum(x * y for x, y in zip(r, e, strict=True)) for r, e in zip(reference(a.src), exported(a.out), strict=True)]
    print("cosine to torch per text: " + " ".join(f"{c:.4f}" for c in cos))
    if a.int8:  # measured on all-mpnet-base-v2: cosine 0.57-0.84 to torch, yet the same routing accuracy
        print("int8 moves the vectors (above); compare the two with turnout route eval before choosing")
    elif min(cos) < 0.999:
        print("error: the exported model does not match torch; not usable", file=sys.stderr)
        return 1
    print(f"written {a.out}/model.onnx and tokenizer.json: embedder: {{type: onnx, path: {a.out}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
