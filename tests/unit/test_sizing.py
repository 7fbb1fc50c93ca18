"""The per-item costs in banditd/sizing.py, measured with tracemalloc (within 25%).

`python -m tests.unit.test_sizing` prints the measured figures docs/deploy.md quotes.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from banditd import sizing
from banditd.policies import linear
from banditd.router import new_decision_id
from banditd.state.connection import RedisConnection, connect
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_store import RedisModelStore, RedisStoreParams
from banditd.types import ModelKey, ModelSpec, PendingDecision

N = 4000


def per_item(build: Callable[[int], object], n: int = N) -> float:
    """Traced bytes per item kept alive by `build(i)` for i < n."""
    kept = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [build(i) for i in range(n)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept) == n
    return (after - before) / n


def decision(i: int, dim: int) -> PendingDecision:
    t = time.time()
    return PendingDecision(new_decision_id("chat"), "chat", "seg", "medium-32b",
                           np.random.default_rng(i).random(dim), 0.5, 10, t, t + 600)  # fmt: skip


def pending_bytes(dim: int) -> float:
    """The decision (id, vector, record) and the store's entries for it."""
    store = InMemoryModelStore()

    def record(i: int) -> None:
        store.record_now(decision(i, dim))

    per_item(record)
    return per_item(record)  # (the second run: the heap and dict are past their first growth)


def arm_bytes(dim: int) -> float:
    rng = np.random.default_rng(0)
    return per_item(lambda i: linear.update(linear.prior(dim, 1.0), rng.random(dim), 1.0), 2000)


def settled_bytes(distinct_segments: bool, dim: int = 3) -> float:
    """Per decision routed and rewarded: in its own segment each, or all in one."""
    store = InMemoryModelStore()
    spec = ModelSpec(dim=dim, default_reward=0.0, fingerprint="f")

    def settle(i: int) -> None:
        d = PendingDecision(f"chat:{i:x}", "chat", f"s{i}" if distinct_segments else "s", "a",
                            np.ones(dim), 1.0, 0, 0.0, 60.0)  # fmt: skip
        store.load_now(ModelKey("chat", d.segment), ["a"], spec, for_route=True)
        store.record_now(d, spec)
        store.settle_now(d.decision_id, 1.0, 1.0, spec)

    return per_item(settle)


def segment_bytes(dim: int = 3) -> float:
    """A segment's model record and registry entry, besides its arms' states."""
    return settled_bytes(True, dim) - settled_bytes(False, dim) - sizing.arm_state_bytes(dim)


def buffered_bytes(dim: int) -> float:
    """One decision in the Redis store's outage buffer (Redis unreachable: port 1)."""

    async def run() -> float:
        params = RedisStoreParams(timeout_s=0.05, retry_after_s=3600.0, max_buffered=N)
        store = RedisModelStore(connect(RedisConnection("redis://127.0.0.1:1/0", timeout_s=0.05)),
                                params)  # fmt: skip
        await store.record(decision(0, dim))  # the first call finds Redis down
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, N):
            await store.record(decision(i, dim))
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert store.stats.buffered == N
        await store.close()
        return (after - before) / (N - 1)

    return asyncio.run(run())


@pytest.mark.parametrize("dim", [3, 32])
def test_pending_decision_cost(dim: int) -> None:
    """Memory store: a pending decision costs PENDING_BYTES + 8 B per dimension."""
    assert pending_bytes(dim) == pytest.approx(sizing.PENDING_BYTES + 8 * dim, rel=0.25)


@pytest.mark.parametrize("dim", [3, 8, 32, 64])
def test_arm_state_cost(dim: int) -> None:
    """One arm's state costs arm_state_bytes(d) (16 d² + 16 d + OVERHEAD)."""
    assert arm_bytes(dim) == pytest.approx(sizing.arm_state_bytes(dim), rel=0.25)


def test_segment_cost() -> None:
    """A segment's own record (model, registry entry) costs about SEGMENT_BYTES."""
    assert segment_bytes() == pytest.approx(sizing.SEGMENT_BYTES, rel=0.25)


@pytest.mark.parametrize("dim", [3, 32])
def test_outage_buffer_cost(dim: int) -> None:
    """Redis store: a buffered decision costs BUFFERED_BYTES + 8 B per dimension."""
    assert buffered_bytes(dim) == pytest.approx(sizing.BUFFERED_BYTES + 8 * dim, rel=0.25)


if __name__ == "__main__":
    for d in (3, 32):
        print(f"pending decision, d={d}: {pending_bytes(d):.0f} B")
        print(f"outage-buffered decision, d={d}: {buffered_bytes(d):.0f} B")
    for d in (3, 8, 32, 64):
        print(f"arm state, d={d}: {arm_bytes(d):.0f} B")
    print(f"segment record (besides its arms): {segment_bytes():.0f} B")
