"""The fleet plan's formulas against its event simulation, on small fleets (docs/scale.md)."""

from __future__ import annotations

import numpy as np
import pytest

from banditd.sim.fleet import (
    Costs,
    Fleet,
    capacity,
    crc16,
    plan,
    popularity,
    redis_memory,
    refetched,
    saturation,
    simulate,
)

COSTS = Costs(
    dim=32, arms=8, worker_us=1200.0, route_share=0.7, redis_route_us=70.0,
    redis_feedback_us=110.0, refetch_worker_us=80.0, refetch_redis_us=8.0, refetch_bytes=4500,
    segment_bytes=40_000, pending_bytes=700, tombstone_bytes=250,
)  # fmt: skip


def test_crc16_is_the_redis_cluster_key_slot_checksum() -> None:
    """CRC16-XMODEM: the check value of '123456789', and CLUSTER KEYSLOT somekey = 11058."""
    assert crc16(b"123456789") == 0x31C3
    assert crc16(b"somekey") % 16384 == 11058


def test_refetched_arms_is_zero_for_one_worker_and_tends_to_all_arms() -> None:
    """E(1) = 0: a worker absorbs its own updates; many workers: every arm changed since."""
    assert refetched(1, 16) == pytest.approx(0.0)
    assert refetched(10_000, 16) == pytest.approx(16.0, rel=0.01)
    assert np.all(np.diff(refetched(np.arange(1, 50), 16)) > 0)


@pytest.mark.parametrize("balance", ["random", "affinity"])
def test_simulated_saturation_and_refetches_are_within_ten_percent_of_the_formulas(
    balance: str,
) -> None:
    """4 workers, 2 shards, 20 Zipf segments: the busiest core's simulated busy share and the
    simulated caches' refetches agree with the formulas."""
    fleet = Fleet(workers=4, shards=2, segments=20, zipf=1.0, balance=balance)  # type: ignore[arg-type]
    cap = capacity(COSTS, fleet)
    run = simulate(COSTS, fleet, seconds=3.0, seed=3, rate=0.7 * cap.rate, preroll=2000)
    assert saturation(run, cap.bottleneck) == pytest.approx(cap.rate, rel=0.1)
    assert saturation(run) == pytest.approx(cap.rate, rel=0.1)  # the busiest core, whichever
    assert run.refetch_per_route == pytest.approx(cap.refetch_per_route, rel=0.1, abs=0.05)
    assert run.throughput == pytest.approx(run.offered, rel=0.1)  # stable: it keeps up


def test_latency_grows_without_bound_past_the_saturation_point() -> None:
    """Offered 10% over the formula's saturation, Route p99 is many times the p99 at 70%."""
    fleet = Fleet(workers=3, shards=1, segments=10, zipf=1.0)
    cap = capacity(COSTS, fleet)
    below = simulate(COSTS, fleet, seconds=0.6, seed=1, rate=0.7 * cap.rate, preroll=500)
    over = simulate(COSTS, fleet, seconds=0.6, seed=1, rate=1.1 * cap.rate, preroll=500)
    assert over.route_p99_us > 5 * below.route_p99_us


def test_a_hot_slot_bounds_the_rate_whatever_the_shard_count() -> None:
    """Policy hash tags put one policy on one shard: past one core of Redis, no shard count
    serves it; per-segment tags spread it until the hottest segment alone fills a core."""
    by_policy = Fleet(1, 1, segments=100, zipf=1.0, tag="policy")
    slot_limit = 1e6 / COSTS.redis_us  # one policy: all of the traffic in one slot
    assert capacity(COSTS, Fleet(1, 8, 100, 1.0, tag="policy")).slot_limit_rate == pytest.approx(
        slot_limit
    )
    assert plan(COSTS, 0.5 * slot_limit, base=by_policy, max_shards=50).shards == 1
    assert plan(COSTS, 1.5 * slot_limit, base=by_policy, max_shards=50).shards is None
    by_segment = Fleet(1, 1, segments=100, zipf=1.0, tag="segment")
    sized = plan(COSTS, 1.5 * slot_limit, base=by_segment, max_shards=50)
    assert sized.shards is not None
    assert sized.shards >= 2
    hottest = popularity(100, 1.0)[0]
    too_hot = 1.05 * 0.7 * slot_limit / hottest  # the hottest segment over 70% of a core
    assert plan(COSTS, too_hot, base=by_segment, max_shards=50).shards is None


def test_redis_memory_is_littles_law() -> None:
    """Pending = rate × reward delay; tombstones = rate × their TTL; models per segment."""
    mem = redis_memory(COSTS, rate=1000.0, segments=10, reward_delay_s=60.0, tombstone_ttl_s=3600)
    assert mem["pending"] == 1000 * 60 * 700
    assert mem["tombstones"] == 1000 * 3600 * 250
    assert mem["models"] == 10 * 40_000
    assert mem["total"] == mem["pending"] + mem["tombstones"] + mem["models"]
