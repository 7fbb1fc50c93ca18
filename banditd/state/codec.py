"""Binary encodings of vectors and arm sums, with a version header. PURE: numpy + struct.

The Lua scripts (banditd/state/lua/*.lua) read and write the same layouts with Redis's
`struct` library, so every multi-byte number is little-endian IEEE-754 float64, and each blob
starts with an 8-byte header:

    offset 0  2 bytes  magic  b"BD"
    offset 2  1 byte   format version (FORMAT_VERSION)
    offset 3  1 byte   kind (KIND_VECTOR or KIND_SUMS)
    offset 4  4 bytes  dim d (uint32 LE)

KIND_VECTOR body: d float64.
KIND_SUMS body (one arm's additive sufficient statistics, see policies/linear.py):
    n, epoch, stamp   3 float64 (integers, exact below 2**53; epoch -1 = no decay epoch yet)
    b                 d float64
    S                 d(d+1)/2 float64, the upper triangle of the symmetric S row by row
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

from banditd.policies.linear import Matrix, Vector

MAGIC = b"BD"
FORMAT_VERSION = 1
KIND_VECTOR = 1
KIND_SUMS = 2
HEADER = struct.Struct("<2sBBI")
NO_EPOCH = -1

_F64 = np.dtype("<f8")


class CodecError(ValueError):
    """A blob is not one this codec wrote (wrong magic, version, kind or length)."""


@dataclass(frozen=True, slots=True)
class ArmSums:
    """One arm's stored statistics: S = Σ x xᵀ, b = Σ r x, n, the decay epoch and a stamp.

    stamp is the apply counter value (its slot's, keys.py) of this arm's last change (cache key).
    """

    s: Matrix
    b: Vector
    n: int
    epoch: int = NO_EPOCH
    stamp: int = 0

    @property
    def dim(self) -> int:
        return int(self.b.shape[0])


def _header(kind: int, dim: int) -> bytes:
    return HEADER.pack(MAGIC, FORMAT_VERSION, kind, dim)


def _read_header(blob: bytes, kind: int) -> int:
    if len(blob) < HEADER.size:
        raise CodecError(f"blob of {len(blob)} bytes is shorter than the header")
    magic, version, got_kind, dim = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CodecError(f"bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise CodecError(f"format version {version} is not {FORMAT_VERSION}")
    if got_kind != kind:
        raise CodecError(f"blob kind {got_kind} is not {kind}")
    return int(dim)


def triangle_size(dim: int) -> int:
    return dim * (dim + 1) // 2


@functools.lru_cache(maxsize=64)
def _upper(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """np.triu_indices(dim), built once per dim (it costs more than the decode itself)."""
    rows, cols = np.triu_indices(dim)
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


def encode_vector(x: Vector) -> bytes:
    v = np.ascontiguousarray(x, dtype=_F64)
    if v.ndim != 1:
        raise CodecError(f"expected a vector, got shape {v.shape}")
    return _header(KIND_VECTOR, v.shape[0]) + v.tobytes()


def decode_vector(blob: bytes) -> Vector:
    dim = _read_header(blob, KIND_VECTOR)
    if len(blob) != HEADER.size + 8 * dim:
        raise CodecError(f"vector blob of dim {dim} has {len(blob)} bytes")
    return np.frombuffer(blob, dtype=_F64, offset=HEADER.size).astype(np.float64)


def encode_sums(sums: ArmSums) -> bytes:
    dim = sums.dim
    if sums.s.shape != (dim, dim):
        raise CodecError(f"S has shape {sums.s.shape}, b has dim {dim}")
    upper = sums.s[_upper(dim)]
    body = np.concatenate(([sums.n, sums.epoch, sums.stamp], sums.b, upper)).astype(_F64)
    return _header(KIND_SUMS, dim) + body.tobytes()


def decode_sums(blob: bytes) -> ArmSums:
    dim = _read_header(blob, KIND_SUMS)
    count = 3 + dim + triangle_size(dim)
    if len(blob) != HEADER.size + 8 * count:
        raise CodecError(f"sums blob of dim {dim} has {len(blob)} bytes")
    body = np.frombuffer(blob, dtype=_F64, offset=HEADER.size).astype(np.float64)
    b = body[3 : 3 + dim].copy()
    s = np.zeros((dim, dim))
    rows, cols = _upper(dim)
    s[rows, cols] = body[3 + dim :]
    s[cols, rows] = body[3 + dim :]
    return ArmSums(s, b, int(body[0]), int(body[1]), int(body[2]))


def encode_f64(value: float) -> bytes:
    """One float64, as the Lua scripts take rewards, times and factors (no text rounding)."""
    return struct.pack("<d", value)


def decode_f64(blob: bytes) -> float:
    return float(struct.unpack("<d", blob)[0])
