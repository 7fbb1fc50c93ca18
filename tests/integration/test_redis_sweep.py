"""The expiry sweep over a policy's slots: it reads each slot's deadline index, but a slot
where nothing is due needs no look before its next deadline, nor before a reward wait window
(less clock skew) from its last look, whoever records there meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from banditd.feedback import ids
from banditd.state.connection import RedisConnection, connect
from banditd.state.redis_store import CLOCK_SKEW_S, RedisModelStore
from banditd.types import ModelSpec, Outcome, PendingDecision

T0 = 1_700_000_000.0
WAIT = 100.0
SPEC = ModelSpec(dim=2, fingerprint="f", default_reward=0.0, reward_wait_s=WAIT)


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[RedisModelStore, RedisModelStore]]:
    a, b = (RedisModelStore(connect(RedisConnection(redis_url, timeout_s=2.0))) for _ in "ab")
    await a.client.flushdb()
    yield a, b
    await a.close()
    await b.close()


def decision(at: float, wait: float = WAIT) -> PendingDecision:
    return PendingDecision(ids.new_decision_id("p", "s"), "p", "s", "a", np.array([1.0, 0.5]),
                           1.0, 0, at, at + wait)  # fmt: skip


async def zranges(store: RedisModelStore) -> int:
    """ZRANGE calls Redis has served so far (the sweep's reads of deadline indexes)."""
    stats = await store.client.info("commandstats")
    return int(stats.get("cmdstat_zrange", {}).get("calls", 0))


async def test_a_quiet_slot_is_skipped_yet_nothing_recorded_elsewhere_expires_late(
    replicas: tuple[RedisModelStore, RedisModelStore],
) -> None:
    """Replica b finds the segment's slot empty: its next sweeps read only the policy's own
    slot, until a wait window less clock skew has passed; decisions replica a recorded in
    between (one by a clock 20 s behind b's) are each expired by b's first sweep after their
    deadline."""
    a, b = replicas
    first = decision(T0)
    await a.record(first, SPEC)
    await a.settle(first.decision_id, 1.0, T0 + 1, SPEC)  # the slot exists and is empty
    assert await b.expire(T0 + 1, 100, {"p": SPEC}) == []
    before = await zranges(b)
    assert await b.expire(T0 + 50, 100, {"p": SPEC}) == []
    assert await zranges(b) - before == 1  # the policy's own slot only
    behind = decision(T0 + 2 - 20)  # recorded after b's look, by a clock 20 s behind
    await a.record(behind, SPEC)
    assert await b.expire(behind.deadline - 0.5, 100, {"p": SPEC}) == []  # looks, sees it
    (expired,) = await b.expire(behind.deadline + 0.5, 100, {"p": SPEC})
    assert (expired.decision_id, expired.outcome) == (behind.decision_id, Outcome.DEFAULTED)
    late = decision(T0 + 90)
    await a.record(late, SPEC)
    (expired,) = await b.expire(late.deadline + 0.5, 100, {"p": SPEC})
    assert expired.decision_id == late.decision_id


async def test_a_replica_looks_by_the_deadline_of_a_decision_it_recorded_itself(
    replicas: tuple[RedisModelStore, RedisModelStore],
) -> None:
    """Another replica's decision with a window shorter than the spec's (a config change
    under way) waits for the next look, at most the window less clock skew late (the bound
    docs/redis.md states); a decision of its own moves the next look forward to its deadline,
    whatever its window."""
    a, b = replicas
    first = decision(T0)
    await b.record(first, SPEC)
    await b.settle(first.decision_id, 1.0, T0 + 1, SPEC)
    assert await b.expire(T0 + 1, 100, {"p": SPEC}) == []  # next look: T0 + 71
    other = decision(T0 + 2, wait=6.0)
    await a.record(other, SPEC)
    assert await b.expire(T0 + 9, 100, {"p": SPEC}) == []  # due, not looked for yet
    own = decision(T0 + 10, wait=5.0)
    await b.record(own, SPEC)
    done = await b.expire(T0 + 15.5, 100, {"p": SPEC})
    assert sorted(s.decision_id for s in done) == sorted([own.decision_id, other.decision_id])
    assert T0 + 1 + WAIT - CLOCK_SKEW_S > T0 + 15.5
