"""PipelineExtractor over the real encoders: layout, embeddings, errors, restart stability."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from banditd.errors import InvalidRequestError
from banditd.features.batcher import BatchingEncoder, BatchingOptions
from banditd.features.encoder import EncoderOptions, OnnxTextEncoder
from banditd.features.pipeline import CategoricalFeature, PipelineExtractor, TextFeature
from banditd.features.schema import NumericFeature
from banditd.types import Context

NUMERIC = (NumericFeature("tokens", default=100, mean=100, std=50),)
CATEGORICAL = (
    CategoricalFeature("lang", vocabulary=("en", "fr", "de")),
    CategoricalFeature("tenant", buckets=8),
)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def batcher(ngram_encoder: OnnxTextEncoder) -> AsyncIterator[BatchingEncoder]:
    b = BatchingEncoder(ngram_encoder, BatchingOptions(max_wait_ms=0))
    yield b
    b.close()


def pipeline(
    batcher: BatchingEncoder, dim: int = 16, seed: int = 0, **kw: object
) -> PipelineExtractor:
    return PipelineExtractor(NUMERIC, CATEGORICAL, TextFeature(dim, seed), batcher, **kw)  # type: ignore[arg-type]


async def test_vector_layout_is_bias_numeric_categorical_text(batcher: BatchingEncoder) -> None:
    """x = [1 | numeric | one-hot(3) | hashed(8) | text(16)] with each block where declared."""
    p = pipeline(batcher)
    assert p.dim == 1 + 1 + 3 + 8 + 16
    x = await p.extract(
        Context(
            text="hello there",
            features={"tokens": 200},
            categorical={"lang": "fr", "tenant": "acme"},
        )
    )
    assert x.shape == (p.dim,)
    assert x[0] == 1.0
    assert x[1] == 2.0
    np.testing.assert_array_equal(x[2:5], [0, 1, 0])
    assert x[5:13].sum() == 1.0
    assert np.linalg.norm(x[13:]) > 0
    y = await p.extract(Context(categorical={"lang": "xx"}))
    np.testing.assert_array_equal(y[2:13], 0)  # unseen value and absent feature: zeros
    np.testing.assert_array_equal(y[13:], 0)  # no text: zero text block
    assert y[1] == 0.0  # the numeric default, scaled


async def test_hashed_slot_depends_only_on_the_value(batcher: BatchingEncoder) -> None:
    """The same tenant lands in the same bucket in two extractors; the slot is fixed."""
    a = await pipeline(batcher).extract(Context(categorical={"tenant": "acme"}))
    b = await pipeline(batcher).extract(Context(categorical={"tenant": "acme"}))
    np.testing.assert_array_equal(a, b)


async def test_precomputed_embedding_skips_the_encoder(batcher: BatchingEncoder) -> None:
    """Passing the encoder's own vector as context.embedding gives the same x, no encoder run."""
    p = pipeline(batcher)
    e = batcher.encoder.encode(["route me to a coding model"])[0]
    runs = batcher.stats.runs
    x_emb = await p.extract(Context(embedding=tuple(float(v) * 3.0 for v in e)))
    assert batcher.stats.runs == runs
    x_text = await p.extract(Context(text="route me to a coding model"))
    np.testing.assert_allclose(x_emb, x_text, atol=1e-6)


async def test_bad_requests_are_invalid_request_errors(batcher: BatchingEncoder) -> None:
    """Wrong embedding length, zero embedding, non-UTF-8 text and unknown names are refused."""
    p = pipeline(batcher)
    cases = [
        (Context(embedding=(1.0, 2.0)), "length 2"),
        (Context(embedding=(0.0,) * batcher.dim), "non-zero"),
        (Context(text="bad \ud800 surrogate"), "UTF-8"),
        (Context(categorical={"colour": "red"}), "unknown categorical"),
        (Context(features={"nope": 1.0}), "unknown features"),
    ]
    for ctx, match in cases:
        with pytest.raises(InvalidRequestError, match=match):
            await p.extract(ctx)
    lenient = pipeline(batcher, allow_unknown=True)
    assert (await lenient.extract(Context(categorical={"colour": "red"}))).shape == (lenient.dim,)


async def test_fingerprint_tracks_everything_that_changes_the_vector(
    batcher: BatchingEncoder, tmp_path: Path
) -> None:
    """Projection dim and seed, vocabulary and the model file all change the fingerprint."""
    from banditd.features.ngram import build_model

    base = pipeline(batcher).fingerprint
    assert pipeline(batcher).fingerprint == base
    assert pipeline(batcher, dim=24).fingerprint != base
    assert pipeline(batcher, seed=1).fingerprint != base
    other_vocab = PipelineExtractor(
        NUMERIC,
        (CategoricalFeature("lang", ("en", "fr")), CATEGORICAL[1]),
        TextFeature(16),
        batcher,
    )
    assert other_vocab.fingerprint != base
    other_model = build_model(tmp_path / "m.onnx", buckets=1024, dim=128)
    other = BatchingEncoder(OnnxTextEncoder(EncoderOptions(model_path=str(other_model))))
    try:
        assert pipeline(other).fingerprint != base
    finally:
        other.close()


_CHILD = """
import asyncio, json, sys
from banditd.features.batcher import BatchingEncoder
from banditd.features.encoder import EncoderOptions, OnnxTextEncoder
from banditd.features.pipeline import PipelineExtractor, TextFeature
from banditd.types import Context
kind, model, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
enc = BatchingEncoder(OnnxTextEncoder(EncoderOptions(kind=kind, model_path=model, max_tokens=128)))
p = PipelineExtractor(text=TextFeature(16, 7), encoder=enc)
async def run():
    return [(await p.extract(Context(text=t))).tolist() for t in texts]
print(json.dumps({"fingerprint": p.fingerprint, "x": asyncio.run(run())}))
enc.close()
"""


@pytest.mark.parametrize("kind", ["ngram", "minilm"])
def test_vectors_and_fingerprint_are_stable_across_processes(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A fresh process (new session, new projection) gives bit-identical vectors and fingerprint."""
    encoder: OnnxTextEncoder = request.getfixturevalue(f"{kind}_encoder")
    texts = ["Write a SQL query joining two tables.", "What's 17 times 23?", "good morning!"]
    model = str(encoder.model_path)
    options = EncoderOptions(kind=kind, model_path=model, max_tokens=128)  # type: ignore[arg-type]
    here = BatchingEncoder(OnnxTextEncoder(options))
    p = PipelineExtractor(text=TextFeature(16, 7), encoder=here)

    async def extract_all() -> list[list[float]]:
        return [(await p.extract(Context(text=t))).tolist() for t in texts]

    try:
        mine = asyncio.run(extract_all())
    finally:
        here.close()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, model, json.dumps(texts)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    child = json.loads(out.stdout)
    assert child["fingerprint"] == p.fingerprint
    assert child["x"] == mine
