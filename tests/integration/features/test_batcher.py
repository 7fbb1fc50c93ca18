"""BatchingEncoder: micro-batching, the LRU cache, the bounded worker pool, error fan-out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from banditd.errors import FailedPreconditionError
from banditd.features.batcher import BatchingEncoder, BatchingOptions
from banditd.features.encoder import OnnxTextEncoder

PROMPTS = [
    f"prompt number {i}: {'code' if i % 2 else 'math'} question about item {i}" for i in range(24)
]


@pytest.fixture(params=["ngram", "minilm"])
def encoder(request: pytest.FixtureRequest) -> OnnxTextEncoder:
    return request.getfixturevalue(f"{request.param}_encoder")  # type: ignore[no-any-return]


async def test_micro_batched_vectors_equal_single_runs(encoder: OnnxTextEncoder) -> None:
    """Concurrent requests share runs, and each gets the vector a single run gives."""
    batcher = BatchingEncoder(encoder, BatchingOptions(workers=1, max_batch=8, max_wait_ms=5))
    try:
        got = await batcher.embed_many(PROMPTS)
    finally:
        batcher.close()
    assert batcher.stats.runs < len(PROMPTS)
    assert batcher.stats.texts_encoded == len(PROMPTS)
    for text, vec in zip(PROMPTS, got, strict=True):
        np.testing.assert_allclose(vec, encoder.encode([text])[0], atol=1e-6)


async def test_repeated_text_is_served_from_cache(ngram_encoder: OnnxTextEncoder) -> None:
    """The second request for a text does not run the encoder; concurrent duplicates share one."""
    batcher = BatchingEncoder(ngram_encoder, BatchingOptions(max_wait_ms=1))
    try:
        first = await asyncio.gather(*(batcher.embed("same text") for _ in range(5)))
        again = await batcher.embed("same text")
    finally:
        batcher.close()
    assert batcher.stats.texts_encoded == 1
    assert batcher.stats.cache_hits == 1
    assert all(np.array_equal(v, again) for v in first)
    assert not again.flags.writeable


async def test_cache_is_bounded_and_evicts_least_recently_used(
    ngram_encoder: OnnxTextEncoder,
) -> None:
    """With room for 2, touching a then adding c evicts b (re-encoded), keeps a (hit)."""
    batcher = BatchingEncoder(ngram_encoder, BatchingOptions(max_wait_ms=0, cache_size=2))
    try:
        for text in ("a", "b", "a", "c", "a", "b"):
            await batcher.embed(text)
    finally:
        batcher.close()
    assert batcher.stats.texts_encoded == 4  # a, b, c, b again
    assert batcher.stats.cache_hits == 2  # a twice


class _SlowEncoder:
    """Records how many encode calls overlap (to check the pool bound)."""

    dim = 2
    fingerprint = "slow"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.sizes: list[int] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.sizes.append(len(texts))
        time.sleep(0.05)  # long enough that the two workers' runs overlap on a loaded machine
        with self.lock:
            self.active -= 1
        return np.ones((len(texts), 2), dtype=np.float32)


async def test_runs_in_flight_never_exceed_workers() -> None:
    """With 2 workers and 40 concurrent texts, at most 2 runs overlap; batches ≤ max_batch."""
    enc = _SlowEncoder()
    batcher = BatchingEncoder(enc, BatchingOptions(workers=2, max_batch=4, max_wait_ms=0))
    try:
        await batcher.embed_many([f"t{i}" for i in range(40)])
    finally:
        batcher.close()
    assert enc.peak == 2
    assert max(enc.sizes) == 4
    assert sum(enc.sizes) == 40


class _FailingEncoder:
    dim = 2
    fingerprint = "failing"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        raise FailedPreconditionError("encoder broke")


async def test_encoder_error_reaches_every_waiter_and_is_not_cached() -> None:
    """Each request of a failed batch gets the error; nothing is cached."""
    batcher = BatchingEncoder(_FailingEncoder(), BatchingOptions(max_wait_ms=1))
    try:
        results = await asyncio.gather(
            *(batcher.embed(t) for t in ("x", "y", "x")), return_exceptions=True
        )
        with pytest.raises(FailedPreconditionError):
            await batcher.embed("x")
    finally:
        batcher.close()
    assert all(isinstance(r, FailedPreconditionError) for r in results)
    assert batcher.stats.cache_hits == 0
