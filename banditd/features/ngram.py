"""The fast default text encoder: hashed word and character n-grams, embedded by a small ONNX graph.

Tokenising (here, pure Python): NFKC + lower-case, words = runs of \\w; for each word in order
its unigram, the bigram with the previous word, then its character trigrams (of " word ").
Each n-gram is hashed (CRC-32, stable across processes) into [1, buckets); 0 is padding.
The first `max_tokens` n-grams are kept (so truncation keeps the start of the text).

The ONNX graph (built by `build_model`, saved by `make models`): a fixed seeded Gaussian table
T ∈ R^{buckets×dim}, sentence_embedding = normalise(Σ_t mask_t · T[id_t] / Σ_t mask_t). That is a
Johnson–Lindenstrauss sketch of the text's bag of n-grams: texts sharing n-grams get close
vectors. Lexical, not semantic; the MiniLM encoder is the semantic one. The graph carries its
tokeniser parameters in metadata_props, so a model file always tokenises the way it was built.

Run `python -m banditd.features.ngram PATH` to build a model file.
"""

from __future__ import annotations

import re
import sys
import unicodedata
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

NGRAM_VERSION = "1"
DEFAULT_BUCKETS = 1 << 15
DEFAULT_DIM = 128
DEFAULT_SEED = 20261123
OUTPUT = "sentence_embedding"
_WORD = re.compile(r"\w+")


def ngrams(text: str) -> list[str]:
    """The n-grams of a text, in text order (see the module docstring)."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    out: list[str] = []
    previous = ""
    for word in words:
        out.append("w:" + word)
        if previous:
            out.append(f"b:{previous} {word}")
        padded = f" {word} "
        out.extend("c:" + padded[i : i + 3] for i in range(len(padded) - 2))
        previous = word
    return out


def ngram_ids(text: str, buckets: int, max_tokens: int) -> list[int]:
    """Bucket ids in [1, buckets) of the first max_tokens n-grams."""
    grams = ngrams(text)[:max_tokens]
    return [1 + zlib.crc32(g.encode("utf-8")) % (buckets - 1) for g in grams]


class NgramTokenizer:
    """Texts -> the graph's inputs: input_ids and attention_mask, int64 [B, T] (T ≥ 1)."""

    def __init__(self, buckets: int, max_tokens: int) -> None:
        if buckets < 2 or max_tokens < 1:
            raise ValueError(f"need buckets >= 2 and max_tokens >= 1, got {buckets}, {max_tokens}")
        self.buckets = buckets
        self.max_tokens = max_tokens

    def __call__(self, texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        rows = [ngram_ids(t, self.buckets, self.max_tokens) for t in texts]
        width = max(1, *(len(r) for r in rows)) if rows else 1
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def build_model(
    path: Path, buckets: int = DEFAULT_BUCKETS, dim: int = DEFAULT_DIM, seed: int = DEFAULT_SEED
) -> Path:
    """Write the n-gram ONNX encoder to `path` (deterministic: same arguments, same bytes)."""
    import onnx  # build-time only (the `text` extra / dev); serving needs onnxruntime alone
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(seed).standard_normal((buckets, dim)).astype(np.float32)
    table[0] = 0.0  # padding row
    eps = np.array([1e-6], dtype=np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"], axis=0),  # [B,T,D]
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),  # [B,T,1]
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),  # [B,D]
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),  # [B,1]
        helper.make_node("Max", ["count", "eps"], ["count_safe"]),
        helper.make_node("Div", ["total", "count_safe"], ["mean"]),
        helper.make_node("ReduceL2", ["mean"], ["norm"], axes=[1], keepdims=1),  # [B,1]
        helper.make_node("Max", ["norm", "eps"], ["norm_safe"]),
        helper.make_node("Div", ["mean", "norm_safe"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "banditd_ngram",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch", "sequence"]
            ),
        ],
        outputs=[helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", dim])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(eps, "eps"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="banditd"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    helper.set_model_props(
        model,
        {
            "banditd.encoder": "ngram",
            "banditd.ngram.version": NGRAM_VERSION,
            "banditd.ngram.buckets": str(buckets),
            "banditd.ngram.seed": str(seed),
        },
    )
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m banditd.features.ngram OUTPUT.onnx")
    path = build_model(Path(args[0]))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
