"""The real ONNX text encoders (n-gram default and MiniLM int8) through onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from banditd.errors import ConfigError, FailedPreconditionError
from banditd.features import ngram
from banditd.features.encoder import EncoderOptions, OnnxTextEncoder
from banditd.features.ngram import build_graph, build_model

TEXTS = [
    "Write a Python function that reverses a linked list.",
    "What is the capital of France?",
    "Solve for x: 3x + 7 = 22.",
    "",
]

# (anchor, close, unrelated): the close one shares the anchor's topic, the other does not.
MINILM_TRIPLES = [
    ("How do I reverse a linked list in Python?",
     "Write code to invert a singly linked list.",
     "What is a good recipe for banana bread?"),
    ("Solve the equation 2x + 5 = 17 for x.",
     "Find x if 3x - 4 = 11.",
     "Tell me a fun fact about penguins."),
    ("hi, how are you doing today?",
     "hello! how's your day going?",
     "Prove that the square root of 2 is irrational."),
]  # fmt: skip
NGRAM_TRIPLES = [
    ("reverse a linked list in python",
     "python function to reverse a linked list",
     "what is the weather in paris"),
    ("solve the quadratic equation x^2 - 5x + 6 = 0",
     "solve this quadratic equation: x^2 + 3x + 2 = 0",
     "write me a poem about the sea"),
]  # fmt: skip


@pytest.fixture(params=["ngram", "minilm"])
def encoder(request: pytest.FixtureRequest) -> OnnxTextEncoder:
    return request.getfixturevalue(f"{request.param}_encoder")  # type: ignore[no-any-return]


def test_encoder_gives_unit_vectors_of_its_dim(encoder: OnnxTextEncoder) -> None:
    """[B, E] float32 rows of norm 1 (zero for an empty n-gram text), E fixed per model."""
    out = encoder.encode(TEXTS)
    assert out.shape == (len(TEXTS), encoder.dim)
    assert out.dtype == np.float32
    norms = np.linalg.norm(out[:3], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert encoder.dim == (128 if encoder.options.kind == "ngram" else 384)


def test_encoder_is_deterministic_across_sessions(encoder: OnnxTextEncoder) -> None:
    """A second InferenceSession on the same file gives identical vectors and fingerprint."""
    again = OnnxTextEncoder(encoder.options)
    np.testing.assert_array_equal(again.encode(TEXTS), encoder.encode(TEXTS))
    assert again.fingerprint == encoder.fingerprint


def test_batched_rows_equal_single_runs(encoder: OnnxTextEncoder) -> None:
    """Padding in a batch does not change a row (masked pooling)."""
    batch = encoder.encode(TEXTS)
    single = np.stack([encoder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_minilm_puts_close_prompts_closer_than_unrelated(minilm_encoder: OnnxTextEncoder) -> None:
    """Cosine(anchor, paraphrase) > cosine(anchor, unrelated) + 0.2 for every triple."""
    for anchor, close, far in MINILM_TRIPLES:
        a, c, f = minilm_encoder.encode([anchor, close, far])
        assert a @ c > a @ f + 0.2, (anchor, float(a @ c), float(a @ f))


def test_ngram_puts_lexically_close_prompts_closer(ngram_encoder: OnnxTextEncoder) -> None:
    """The n-gram encoder is lexical: shared words and trigrams make vectors close."""
    for anchor, close, far in NGRAM_TRIPLES:
        a, c, f = ngram_encoder.encode([anchor, close, far])
        assert a @ c > a @ f + 0.2, (anchor, float(a @ c), float(a @ f))


def test_text_past_max_tokens_is_ignored(encoder: OnnxTextEncoder) -> None:
    """Texts that differ only after max_tokens tokens encode identically; short ones do not."""
    base = " ".join(f"token{i % 50} common words here" for i in range(400))
    a, b = encoder.encode([base + " apples", base + " oranges"])
    np.testing.assert_array_equal(a, b)
    c, d = encoder.encode(["apples and pears", "oranges and pears"])
    assert not np.array_equal(c, d)


def test_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    """A model path that does not exist names the file and how to do without or write one."""
    with pytest.raises(ConfigError, match="packaged n-gram encoder"):
        OnnxTextEncoder(EncoderOptions(kind="ngram", model_path=str(tmp_path / "none.onnx")))


def test_corrupt_model_file_is_a_config_error(tmp_path: Path) -> None:
    """Bytes that are not an ONNX model fail at load time as a ConfigError."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load"):
        OnnxTextEncoder(EncoderOptions(kind="ngram", model_path=str(bad)))


def test_ngram_kind_refuses_a_model_without_ngram_metadata(
    minilm_encoder: OnnxTextEncoder,
) -> None:
    """The n-gram tokeniser needs the model's bucket count; MiniLM does not carry it."""
    with pytest.raises(ConfigError, match="not a banditd n-gram"):
        OnnxTextEncoder(EncoderOptions(kind="ngram", model_path=str(minilm_encoder.model_path)))


def test_unavailable_execution_provider_is_a_config_error(ngram_model: Path) -> None:
    """Asking for a provider this onnxruntime lacks lists the ones it has."""
    with pytest.raises(ConfigError, match="CPUExecutionProvider"):
        OnnxTextEncoder(
            EncoderOptions(model_path=str(ngram_model), providers=("NoSuchExecutionProvider",))
        )


def _save(
    path: Path,
    inputs: list[onnx.ValueInfoProto],
    output: onnx.ValueInfoProto,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto] = (),
) -> Path:  # type: ignore[assignment]
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def test_model_with_unfeedable_inputs_is_a_config_error(tmp_path: Path) -> None:
    """An encoder whose inputs are not int64 [B,T] token tensors is refused at load time."""
    path = _save(
        tmp_path / "float_in.onnx",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["b", 3])],
        helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 3]),
        [helper.make_node("Identity", ["pixels"], ["out"])],
    )
    with pytest.raises(ConfigError, match="pixels"):
        OnnxTextEncoder(EncoderOptions(kind="minilm", model_path=str(path)))


def test_model_with_wrong_output_rank_is_a_config_error(tmp_path: Path) -> None:
    """An output that is neither [B,E] nor [B,T,E] is refused at load time."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, ["b"])
    path = _save(
        tmp_path / "rank1.onnx", [ids], out,
        [helper.make_node("ReduceSum", ["input_ids", "axes"], ["out"], keepdims=0)],
        [onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="shape"):
        OnnxTextEncoder(EncoderOptions(kind="minilm", model_path=str(path)))


def test_output_of_the_wrong_batch_size_is_a_failed_precondition(tmp_path: Path) -> None:
    """A model that passes the probe but returns the wrong batch at run time is reported."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "n"])
    path = _save(
        tmp_path / "flat.onnx", [ids], out,
        [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Reshape", ["f", "shape"], ["out"])],
        [onnx.numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")],
    )  # fmt: skip
    enc = OnnxTextEncoder(EncoderOptions(kind="minilm", model_path=str(path)))
    with pytest.raises(FailedPreconditionError, match="shape"):
        enc.encode(["one text", "another text"])


def test_ngram_model_build_is_deterministic(tmp_path: Path) -> None:
    """`make models` twice writes the same bytes (so the file hash in the fingerprint is stable)."""
    a = build_model(tmp_path / "a.onnx", buckets=512, dim=8, seed=3)
    b = build_model(tmp_path / "b.onnx", buckets=512, dim=8, seed=3)
    c = build_model(tmp_path / "c.onnx", buckets=512, dim=8, seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_packaged_ngram_graph_is_what_build_graph_writes(tmp_path: Path) -> None:
    """The graph the wheel ships is reproducible: `--graph` rebuilds it byte for byte."""
    rebuilt = build_graph(tmp_path / "ngram-v1.onnx")
    assert rebuilt.read_bytes() == ngram.packaged_graph().read_bytes()
    assert rebuilt.stat().st_size < 4096  # the table is not in it


def test_packaged_ngram_default_equals_the_built_model(ngram_model: Path) -> None:
    """No model_path: the packaged graph + the table drawn at start give the built file's vectors
    and its fingerprint, so state learned under either carries over to the other."""
    packaged = OnnxTextEncoder(EncoderOptions(kind="ngram"))
    built = OnnxTextEncoder(EncoderOptions(kind="ngram", model_path=str(ngram_model)))
    assert packaged.model_path == ngram.packaged_graph()
    texts = [*TEXTS, *(t for triple in NGRAM_TRIPLES for t in triple), "ünïcödé ｆｕｌｌ"]
    np.testing.assert_array_equal(packaged.encode(texts), built.encode(texts))
    assert (packaged.dim, packaged.fingerprint) == (built.dim, built.fingerprint)


def test_packaged_ngram_graph_without_its_table_does_not_load() -> None:
    """The shipped graph cannot silently run without the generated table: onnxruntime refuses
    it, naming the table's (never existing) location."""
    with pytest.raises(ort_state.Fail, match=ngram.TABLE_LOCATION):
        ort.InferenceSession(str(ngram.packaged_graph()), providers=["CPUExecutionProvider"])


def test_a_table_unlike_the_packaged_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A numpy whose random stream changed would draw another table: a ConfigError at start, not
    different vectors under the same fingerprint."""
    drawn = ngram.table

    def other_stream() -> np.ndarray:
        t = drawn()
        t[1, 0] += 1.0
        return t

    monkeypatch.setattr(ngram, "table", other_stream)
    with pytest.raises(ConfigError, match="table_sha256"):
        OnnxTextEncoder(EncoderOptions(kind="ngram"))
