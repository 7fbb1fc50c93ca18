"""The numeric feature schema: caller-supplied features in a fixed order, plus a bias term.

x = [1, (f_1 − mean_1)/std_1, ..., (f_n − mean_n)/std_n], with a feature's default when the
request leaves it out. No I/O; the ONNX text pipeline (features/pipeline.py) builds on it.

Bounds: a feature's standardised value z = (f − mean)/std must lie within ±max_abs_z and its
raw value within [min, max] when the config declares them. Out of range, it is clipped to the
nearest bound (`clip`, the default: counted in `clipped`) or refused with InvalidRequestError
naming the feature. Non-finite values are always refused. So x is bounded by construction and
one request can never put a huge value into a model's statistics.
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

DEFAULT_MAX_ABS_Z = 8.0  # standardised features beyond ±8 std are out of range


@dataclass(frozen=True, slots=True)
class NumericFeature:
    name: str
    default: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    lo: float = -math.inf  # raw bounds (config min/max)
    hi: float = math.inf

    def z_range(self, max_abs_z: float) -> tuple[float, float]:
        """The allowed standardised values: ±max_abs_z narrowed by the raw bounds."""
        z_lo = max(-max_abs_z, (self.lo - self.mean) / self.std)
        z_hi = min(max_abs_z, (self.hi - self.mean) / self.std)
        if not z_lo <= (self.default - self.mean) / self.std <= z_hi:
            raise ValueError(
                f"feature {self.name!r}: default {self.default:g} is outside its allowed range"
                f" [{self.mean + z_lo * self.std:g}, {self.mean + z_hi * self.std:g}]"
                f" (min/max, and max_abs_z = {max_abs_z:g} standard deviations around the mean)"
            )
        return z_lo, z_hi


def fingerprint_of(*parts: object) -> str:
    """A short stable hash of a pipeline description (JSON of its parts)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class NumericExtractor:
    """FeatureExtractor for numeric features only (the default pipeline)."""

    def __init__(
        self,
        features: Sequence[NumericFeature],
        allow_unknown: bool = False,
        max_abs_z: float = DEFAULT_MAX_ABS_Z,
        clip: bool = True,
    ) -> None:
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        if not max_abs_z > 0:
            raise ValueError(f"max_abs_z must be > 0, got {max_abs_z}")
        self._features = tuple(features)
        self._index = {f.name: i + 1 for i, f in enumerate(features)}
        self._allow_unknown = allow_unknown
        self._base = np.array([1.0] + [(f.default - f.mean) / f.std for f in features])
        self._base_list = self._base.tolist()
        self._mean_list = [0.0] + [f.mean for f in features]
        self._inv_std_list = [1.0] + [1.0 / f.std for f in features]
        ranges = [(1.0, 1.0)] + [f.z_range(max_abs_z) for f in features]
        self._z_lo = [lo for lo, _ in ranges]
        self._z_hi = [hi for _, hi in ranges]
        self._max_abs_z = max_abs_z
        self._clip = clip
        self.clipped = 0  # values clipped to their bounds (exported as a metric)
        # Not fingerprinted: bounds change no in-range vector, so tightening one keeps the model.
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
            z_lo, z_hi = self._z_lo, self._z_hi
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
                z = (value - mean[i]) * scale[i]
                if not z_lo[i] <= z <= z_hi[i]:
                    z = self._out_of_range(i, value, z)
                values[i] = z
            x = np.array(values)
        if not self._allow_unknown and (context.categorical or context.embedding):
            raise InvalidRequestError(
                "this policy's pipeline takes no categorical features or embeddings"
                " (set features.allow_unknown to ignore them)"
            )
        return x

    def _out_of_range(self, i: int, value: float, z: float) -> float:
        """The clipped standardised value, or InvalidRequestError naming the feature."""
        lo, hi = self._z_lo[i], self._z_hi[i]
        if self._clip:
            self.clipped += 1
            return lo if z < lo else hi  # (z may be ±inf after an overflow: still clipped)
        f = self._features[i - 1]
        raise InvalidRequestError(
            f"feature {f.name!r} is {value:g}, outside its allowed range"
            f" [{f.mean + lo * f.std:g}, {f.mean + hi * f.std:g}] (the feature's min/max and"
            f" max_abs_z = {self._max_abs_z:g} standard deviations around its mean {f.mean:g},"
            f" std {f.std:g}); send a value in range, fix the feature's mean/std/min/max in the"
            " config, or set out_of_range = 'clip'"
        )
