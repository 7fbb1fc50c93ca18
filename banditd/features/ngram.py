"""The fast default text encoder: hashed word and character n-grams, embedded by a small ONNX graph.

Tokenising (here, pure Python): NFKC + lower-case, words = runs of \\w; for each word in order
its unigram, the bigram with the previous word, then its character trigrams (of " word ").
Each n-gram is hashed (CRC-32, stable across processes) into [1, buckets); 0 is padding.
The first `max_tokens` n-grams are kept (so truncation keeps the start of the text).

The ONNX graph: a fixed seeded Gaussian table T ∈ R^{buckets×dim},
sentence_embedding = normalise(Σ_t mask_t · T[id_t] / Σ_t mask_t). That is a
Johnson–Lindenstrauss sketch of the text's bag of n-grams: texts sharing n-grams get close
vectors. Lexical, not semantic; the MiniLM encoder is the semantic one. The graph carries its
tokeniser parameters in metadata_props, so a model file always tokenises the way it was built.

Two forms of the same encoder, giving the same vectors and the same pipeline fingerprint:
- The packaged default (`packaged_graph()`, 1 KB, in the wheel): the graph with T declared as
  external data that is never a file. The daemon draws T from its seed with numpy at start
  (`table()`) and hands it to onnxruntime (SessionOptions.add_external_initializers), so the
  encoder needs no build step and no `onnx` package. Its metadata holds the SHA-256 of T
  (checked at start: a numpy whose random stream changed is refused, not silently different)
  and of the one-file model below (the fingerprint uses it, so state learned with either form
  carries over). Checked on onnxruntime 1.32: add_initializer would need a placeholder table in
  the file (it refuses external data whose file is missing), and T as a graph input would have
  to be fed with every run.
- One self-contained 16 MB file (`build_model`), for `model_path` or other runtimes.
Both are written with `onnx` (the dev and text extras), deterministically:
`python -m banditd.features.ngram PATH` (one file) or `--graph PATH` (the packaged graph; a test
rebuilds it and compares bytes with the shipped one).

Why generate rather than ship the 16 MB file (measured on this machine, 2 shared cores, warm page
cache, median of 9; docs/features.md): the wheel carries 1.1 KB instead of 15.5 MB compressed
(the table is Gaussian noise, deflate saves 7%), for about 45 ms more per start: an encoder
loads in 62 ms (T drawn in 49 ms, hashed in 11 ms) against 16 ms from the file.
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

NGRAM_VERSION = "1"
DEFAULT_BUCKETS = 1 << 15
DEFAULT_DIM = 128
DEFAULT_SEED = 20261123
OUTPUT = "sentence_embedding"
TABLE = "table"  # the initializer the packaged graph leaves to the daemon
# The packaged graph's table is "external data" at this location, which is never a file: loaded
# without the generated table, onnxruntime fails naming it instead of running on zeros.
TABLE_LOCATION = "generated-at-start-by-banditd.features.ngram.table"
GRAPH_FILE = "ngram-v1.onnx"  # package data next to this module
_WORD = re.compile(r"\w+")

if TYPE_CHECKING:
    import onnx


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


def packaged_graph() -> Path:
    """The shipped graph of the default n-gram encoder (its table comes from `table()`)."""
    return Path(__file__).with_name(GRAPH_FILE)


def table(
    buckets: int = DEFAULT_BUCKETS, dim: int = DEFAULT_DIM, seed: int = DEFAULT_SEED
) -> npt.NDArray[np.float32]:
    """T ∈ R^{buckets×dim}, T_ij ~ N(0, 1) from numpy's default_rng(seed); row 0 (padding) is 0."""
    t = np.random.default_rng(seed).standard_normal((buckets, dim)).astype(np.float32)
    t[0] = 0.0
    return t


def table_sha256(t: npt.NDArray[np.float32]) -> str:
    return hashlib.sha256(np.ascontiguousarray(t).tobytes()).hexdigest()


def _model(buckets: int, dim: int, seed: int, t: npt.NDArray[np.float32]) -> onnx.ModelProto:
    """The encoder as an ONNX model with T as its initializer `table`."""
    from onnx import TensorProto, helper, numpy_helper

    eps = np.array([1e-6], dtype=np.float32)
    nodes = [
        helper.make_node("Gather", [TABLE, "input_ids"], ["emb"], axis=0),  # [B,T,D]
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
            numpy_helper.from_array(t, TABLE),
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
    return model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)
    return path


def build_model(
    path: Path, buckets: int = DEFAULT_BUCKETS, dim: int = DEFAULT_DIM, seed: int = DEFAULT_SEED
) -> Path:
    """Write the n-gram ONNX encoder, table included, to `path` (same arguments, same bytes)."""
    import onnx

    model = _model(buckets, dim, seed, table(buckets, dim, seed))
    onnx.checker.check_model(model)
    return _save(model, path)


def build_graph(
    path: Path, buckets: int = DEFAULT_BUCKETS, dim: int = DEFAULT_DIM, seed: int = DEFAULT_SEED
) -> Path:
    """Write the graph the wheel ships: `build_model`'s model with its table left out.

    The table stays declared (float32 [buckets, dim]) as external data at TABLE_LOCATION, and
    the metadata records the hashes the daemon checks and fingerprints with (module docstring).
    """
    import onnx
    from onnx import TensorProto, external_data_helper, helper

    t = table(buckets, dim, seed)
    model = _model(buckets, dim, seed, t)
    onnx.checker.check_model(model)  # before the table goes: the checker wants its file
    whole = hashlib.sha256(model.SerializeToString()).hexdigest()  # = build_model's file hash
    (init,) = [i for i in model.graph.initializer if i.name == TABLE]
    external_data_helper.set_external_data(init, location=TABLE_LOCATION)
    init.data_location = TensorProto.EXTERNAL
    init.ClearField("raw_data")
    props = {p.key: p.value for p in model.metadata_props}
    props |= {
        "banditd.ngram.dim": str(dim),
        "banditd.ngram.table": "generated",
        "banditd.ngram.table_sha256": table_sha256(t),
        "banditd.ngram.model_sha256": whole,
    }
    helper.set_model_props(model, props)
    return _save(model, path)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    graph = args[:1] == ["--graph"]
    if graph:
        args = args[1:]
    if len(args) != 1:
        raise SystemExit("usage: python -m banditd.features.ngram [--graph] OUTPUT.onnx")
    path = (build_graph if graph else build_model)(Path(args[0]))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
