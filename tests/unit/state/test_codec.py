"""Round trips and rejections of the state codec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from banditd.state import codec

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def sums(draw: st.DrawFn) -> codec.ArmSums:
    d = draw(st.integers(1, 8))
    upper = draw(arrays(np.float64, (codec.triangle_size(d),), elements=finite))
    s = np.zeros((d, d))
    rows, cols = np.triu_indices(d)
    s[rows, cols] = upper
    s[cols, rows] = upper
    b = draw(arrays(np.float64, (d,), elements=finite))
    n, epoch, stamp = (draw(st.integers(-1, 2**53)) for _ in range(3))
    return codec.ArmSums(s, b, n, epoch, stamp)


@given(sums())
def test_sums_round_trip_bit_for_bit(value: codec.ArmSums):
    """decode(encode(s)) == s, including signed zeros and extremes."""
    out = codec.decode_sums(codec.encode_sums(value))
    assert out.s.tobytes() == value.s.tobytes()
    assert out.b.tobytes() == value.b.tobytes()
    assert (out.n, out.epoch, out.stamp) == (value.n, value.epoch, value.stamp)


@given(arrays(np.float64, st.integers(1, 64), elements=finite))
def test_vector_round_trip_bit_for_bit(x: np.ndarray):
    """Vectors survive encoding exactly (the Lua scripts see the same doubles)."""
    assert codec.decode_vector(codec.encode_vector(x)).tobytes() == x.tobytes()


@given(finite)
def test_f64_round_trip(value: float):
    """Rewards and times are passed to Lua as raw float64, never as rounded text."""
    assert codec.decode_f64(codec.encode_f64(value)) == value


def test_sums_blob_is_header_plus_upper_triangle():
    """Header (8 bytes) then n, epoch, stamp, b and the d(d+1)/2 upper triangle of S."""
    d = 4
    blob = codec.encode_sums(codec.ArmSums(np.eye(d), np.ones(d), 3))
    assert len(blob) == 8 + 8 * (3 + d + codec.triangle_size(d))
    assert blob[:4] == b"BD\x01\x02"


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"XX\x01\x01\x01\x00\x00\x00" + bytes(8), "magic"),
        (b"BD\x09\x01\x01\x00\x00\x00" + bytes(8), "version"),
        (b"BD\x01\x02\x01\x00\x00\x00" + bytes(8), "kind"),
        (b"BD\x01\x01\x02\x00\x00\x00" + bytes(8), "bytes"),
        (b"BD", "shorter"),
    ],
)
def test_decode_vector_rejects_foreign_blobs(blob: bytes, match: str):
    """A blob from another format version or kind is refused, not misread."""
    with pytest.raises(codec.CodecError, match=match):
        codec.decode_vector(blob)
