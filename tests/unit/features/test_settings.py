"""Feature pipeline config: categorical and text sections validate at load time."""

from __future__ import annotations

import pydantic
import pytest

from banditd.config import CategoricalFeatureSettings, FeatureSettings, Settings


def test_categorical_needs_exactly_one_of_vocabulary_and_buckets() -> None:
    """Neither or both of vocabulary/buckets is a validation error."""
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        CategoricalFeatureSettings(name="lang")
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        CategoricalFeatureSettings(name="lang", vocabulary=["en"], buckets=8)


def test_duplicate_categorical_names_are_refused() -> None:
    """Two categorical features with one name would make the vector ambiguous."""
    with pytest.raises(pydantic.ValidationError, match="duplicate"):
        FeatureSettings(categorical=[{"name": "a", "buckets": 2}, {"name": "a", "buckets": 3}])  # type: ignore[list-item]


def test_text_pipeline_is_read_from_nested_settings() -> None:
    """A policy's text block and the process-wide encoder runtime come from one Settings."""
    s = Settings(
        policies={  # type: ignore[dict-item]
            "p": {
                "arms": ["a"],
                "features": {
                    "numeric": ["n"],
                    "categorical": [{"name": "lang", "vocabulary": ["en", "fr"]}],
                    "text": {"encoder": "minilm", "dim": 24, "max_tokens": 128},
                },
            }
        },
        text_encoder={"workers": 2, "max_wait_ms": 2.0},  # type: ignore[arg-type]
    )
    features = s.policies["p"].features
    assert not features.is_numeric_only
    assert features.categorical_features()[0].width == 2
    assert features.text is not None
    opts = s.text_encoder.encoder_options(features.text)
    assert (opts.kind, opts.max_tokens, opts.intra_op_threads) == ("minilm", 128, 1)
    assert s.text_encoder.batching_options().workers == 2
    assert FeatureSettings(numeric=["n"]).is_numeric_only
