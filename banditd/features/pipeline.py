"""PipelineExtractor: bias + numeric + categorical + projected text features, one vector.

Layout of x (fixed by the config, recorded in the fingerprint):
    [1 (bias) | numeric (schema.py) | categorical blocks in config order | text (dim)]
- Categorical, one-hot: one slot per vocabulary value; an unseen or absent value is all zeros.
- Categorical, hashed: `buckets` slots, slot = CRC-32("name=value") mod buckets; absent = zeros.
- Text: the encoder's unit vector e ∈ R^E (text truncated at the encoder's max_tokens), then a
  fixed random projection P e with P ∈ R^{dim×E}, P_ij ~ N(0, 1/dim) drawn from `seed` (dim = 0
  keeps e). Context.embedding, when given, replaces the encoder: it must have length E (the
  encoder's own output space, e.g. 384 for MiniLM), is L2-normalised, then projected the same
  way. No text and no embedding gives a zero text block.
The fingerprint covers the version, the numeric schema, the categorical blocks, the encoder
(model file hash, tokenizer, max_tokens) and the projection matrix itself (its bytes' hash), so
a change of any of them (even of numpy's random stream) makes stores refuse old state.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from banditd.errors import InvalidRequestError, shown
from banditd.features.batcher import BatchingEncoder
from banditd.features.schema import (
    DEFAULT_MAX_ABS_Z,
    NumericExtractor,
    NumericFeature,
    fingerprint_of,
)
from banditd.policies.linear import Vector
from banditd.types import Context

PIPELINE_VERSION = "pipeline-v1"


@dataclass(frozen=True, slots=True)
class CategoricalFeature:
    """One-hot over `vocabulary`, or hashed into `buckets` slots (exactly one of the two)."""

    name: str
    vocabulary: tuple[str, ...] = ()
    buckets: int = 0

    def __post_init__(self) -> None:
        if bool(self.vocabulary) == (self.buckets > 0):
            raise ValueError(f"categorical {self.name!r}: give a vocabulary or buckets, not both")
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError(f"categorical {self.name!r}: duplicate vocabulary values")

    @property
    def width(self) -> int:
        return len(self.vocabulary) or self.buckets


@dataclass(frozen=True, slots=True)
class TextFeature:
    """The text block: projected to `dim` (0 = the encoder's own dimension) with `seed`."""

    dim: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 0:
            raise ValueError(f"text dim must be >= 0, got {self.dim}")


def random_projection(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    """P ∈ R^{out×in}, P_ij ~ N(0, 1/out): E‖Pe‖² = ‖e‖² (Johnson–Lindenstrauss)."""
    rng = np.random.default_rng([seed, in_dim, out_dim])
    return rng.standard_normal((out_dim, in_dim)) / math.sqrt(out_dim)


class PipelineExtractor:
    """FeatureExtractor for a declared pipeline (see the module docstring for the layout)."""

    def __init__(
        self,
        numeric: Sequence[NumericFeature] = (),
        categorical: Sequence[CategoricalFeature] = (),
        text: TextFeature | None = None,
        encoder: BatchingEncoder | None = None,
        allow_unknown: bool = False,
        max_abs_z: float = DEFAULT_MAX_ABS_Z,
        clip: bool = True,
    ) -> None:
        if (text is None) != (encoder is None):
            raise ValueError("a text block needs an encoder and vice versa")
        names = [f.name for f in categorical]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate categorical names in {names}")
        self._numeric = NumericExtractor(numeric, True, max_abs_z, clip)
        self._numeric_names = frozenset(f.name for f in numeric)
        self._categorical = tuple(categorical)
        self._vocab = {f.name: {v: i for i, v in enumerate(f.vocabulary)} for f in categorical}
        self._allow_unknown = allow_unknown
        self._encoder = encoder
        self._projection: np.ndarray | None = None
        text_part: object = None
        if text is not None and encoder is not None:
            if text.dim:
                self._projection = random_projection(encoder.dim, text.dim, text.seed)
            proj_hash = (
                hashlib.sha256(self._projection.tobytes()).hexdigest()[:16]
                if self._projection is not None
                else "identity"
            )
            text_part = ("random-projection", text.dim, text.seed, proj_hash, encoder.fingerprint)
        self._text_dim = 0 if encoder is None else (text.dim if text and text.dim else encoder.dim)
        self._dim = self._numeric.dim + sum(f.width for f in categorical) + self._text_dim
        self._fingerprint = fingerprint_of(
            PIPELINE_VERSION,
            self._numeric.fingerprint,
            [(f.name, list(f.vocabulary), f.buckets) for f in categorical],
            text_part,
        )

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def clipped(self) -> int:
        """Numeric values clipped to their bounds so far."""
        return self._numeric.clipped

    @property
    def encoder(self) -> BatchingEncoder | None:
        return self._encoder

    async def extract(self, context: Context) -> Vector:
        parts = [
            self._numeric_block(context.features),
            self._categorical_block(context.categorical),
        ]
        if self._encoder is not None:
            parts.append(await self._text_block(context))
        elif context.embedding and not self._allow_unknown:
            raise InvalidRequestError(
                "this policy's pipeline has no text block, so it takes no embedding"
                " (set features.allow_unknown to ignore it)"
            )
        return np.concatenate(parts)

    def _numeric_block(self, features: Mapping[str, float]) -> Vector:
        if not self._allow_unknown:
            unknown = sorted(set(features) - self._numeric_names)
            if unknown:
                raise InvalidRequestError(
                    f"unknown features {shown(unknown)}; this policy's features are"
                    f" {sorted(self._numeric_names)}"
                )
        return self._numeric.vector(Context(features=features))

    def _categorical_block(self, values: Mapping[str, str]) -> Vector:
        out = np.zeros(sum(f.width for f in self._categorical))
        if not self._allow_unknown:
            unknown = sorted(set(values) - set(self._vocab))
            if unknown:
                raise InvalidRequestError(
                    f"unknown categorical features {shown(unknown)};"
                    f" this policy's are {sorted(self._vocab)}"
                )
        offset = 0
        for f in self._categorical:
            value = values.get(f.name)
            if value is not None:
                if f.buckets:
                    slot = zlib.crc32(f"{f.name}={value}".encode("utf-8", "replace")) % f.buckets
                    out[offset + slot] = 1.0
                else:
                    i = self._vocab[f.name].get(value)
                    if i is not None:
                        out[offset + i] = 1.0
            offset += f.width
        return out

    async def _text_block(self, context: Context) -> Vector:
        assert self._encoder is not None
        if context.embedding:
            e = np.asarray(context.embedding, dtype=np.float64)
            if e.shape != (self._encoder.dim,):
                raise InvalidRequestError(
                    f"context.embedding has length {e.size}; this policy's text encoder gives"
                    f" {self._encoder.dim} (send the encoder's own output, before projection)"
                )
            norm = float(np.linalg.norm(e))
            if not math.isfinite(norm) or norm == 0.0:
                raise InvalidRequestError("context.embedding must be finite and non-zero")
            e = e / norm
        elif context.text:
            try:
                context.text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidRequestError(
                    f"context.text is not valid UTF-8 (at character {exc.start})"
                ) from exc
            e = (await self._encoder.embed(context.text)).astype(np.float64)
        else:
            return np.zeros(self._text_dim)
        return e if self._projection is None else self._projection @ e
