"""The numeric feature schema: caller-supplied features in a fixed order, plus a bias term.

x = [1, (f_1 − mean_1)/std_1, ..., (f_n − mean_n)/std_n], with a feature's default when the
request leaves it out. No I/O; the ONNX text pipeline (features/onnx_extractor.py) builds on it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from banditd.errors import InvalidRequestError, shown
from banditd.policies.linear import Vector
from banditd.types import Context


@dataclass(frozen=True, slots=True)
class NumericFeature:
    name: str
    default: float = 0.0
    mean: float = 0.0
    std: float = 1.0


def fingerprint_of(*parts: object) -> str:
    """A short stable hash of a pipeline description (JSON of its parts)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class NumericExtractor:
    """FeatureExtractor for numeric features only (the default pipeline)."""

    def __init__(self, features: Sequence[NumericFeature], allow_unknown: bool = False) -> None:
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        self._features = tuple(features)
        self._index = {f.name: i + 1 for i, f in enumerate(features)}
        self._allow_unknown = allow_unknown
        self._base = np.array([1.0] + [(f.default - f.mean) / f.std for f in features])
        self._base_list = self._base.tolist()
        self._mean_list = [0.0] + [f.mean for f in features]
        self._inv_std_list = [1.0] + [1.0 / f.std for f in features]
        self._fingerprint = fingerprint_of(
            "numeric-v1", [(f.name, f.default, f.mean, f.std) for f in features]
        )

    @property
    def dim(self) -> int:
        return len(self._features) + 1

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    async def extract(self, context: Context) -> Vector:
        return self.vector(context)

    def vector(self, context: Context) -> Vector:
        # Plain Python floats and one numpy call at the end: on the hot path, per-call numpy
        # overhead costs more than the arithmetic on a few dozen numbers (docs/bench.md).
        features = context.features
        if not features:
            x = self._base.copy()
        else:
            values = list(self._base_list)
            index, mean, scale = self._index, self._mean_list, self._inv_std_list
            for name, value in features.items():
                i = index.get(name)
                if i is None:
                    if self._allow_unknown:
                        continue
                    raise InvalidRequestError(
                        f"unknown feature {shown(name)}; this policy's features are {sorted(index)}"
                    )
                if not math.isfinite(value):
                    raise InvalidRequestError(
                        f"feature {shown(name)} is {value}; features must be finite"
                    )
                values[i] = (value - mean[i]) * scale[i]
            x = np.array(values)
        if not self._allow_unknown and (context.categorical or context.embedding):
            raise InvalidRequestError(
                "this policy's pipeline takes no categorical features or embeddings"
                " (set features.allow_unknown to ignore them)"
            )
        return x
