"""Finding 4 of the robustness issue: no caller can grow state without bound.

50,000 distinct segment strings each created model state, and 5,000 auto-created policies
likewise, with nothing bounding, expiring or refusing them. Now: a per-policy segment limit
(refuse, or evict the least recently used), idle expiry, and caps on auto-created policies
and on arms added by allow_new_arms.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from banditd.errors import ResourceExhaustedError
from banditd.features.schema import NumericExtractor, NumericFeature
from banditd.policies.spec import PolicyConfig
from banditd.router import Router
from banditd.state.memory_store import InMemoryModelStore
from banditd.types import Candidate, Context, ModelKey
from tests.conftest import FakeClock

CHAT = PolicyConfig(
    name="chat", arms=("a", "b"), numeric=(NumericFeature("x1"),), reward_wait_s=60.0,
    max_segments=1000, segment_ttl_s=3600.0,
)  # fmt: skip
ARMS = [Candidate("a"), Candidate("b")]
CTX = Context(features={"x1": 0.5})


def make_router(
    clock: FakeClock, template: PolicyConfig | None = None, **changes: object
) -> tuple[Router, InMemoryModelStore]:
    store = InMemoryModelStore()
    router = Router(
        {"chat": dataclasses.replace(CHAT, **changes)},  # type: ignore[arg-type]
        lambda p: NumericExtractor(p.numeric, p.allow_unknown_features),
        store, clock, np.random.default_rng(0), template=template,
    )  # fmt: skip
    return router, store


async def learn(router: Router, segment: str) -> None:
    d = await router.route("chat", segment, CTX, ARMS)
    await router.feedback(d.decision_id, 1.0, {})


async def test_fifty_thousand_segments_stop_at_max_segments(clock: FakeClock) -> None:
    """The 1,001st new segment is RESOURCE_EXHAUSTED, naming the limit and the ways out;
    known segments keep working and the store holds at most 1,000 models."""
    router, store = make_router(clock)
    refused = 0
    for i in range(50_000):
        try:
            await learn(router, f"s{i}")
        except ResourceExhaustedError:
            refused += 1
    assert refused == 49_000
    with pytest.raises(ResourceExhaustedError, match=r"already has 1000 segments.*max_segments"):
        await learn(router, "one-more")
    assert len(store.models()) == store.segment_count == 1000
    await learn(router, "s999")  # a known segment still routes and learns
    assert await store.delete_segment("chat", "s0")
    await learn(router, "new")  # room again


async def test_evict_lru_forgets_the_least_recently_used_segment(clock: FakeClock) -> None:
    """on_segment_limit = 'evict_lru': at the limit the oldest segment's model goes."""
    router, store = make_router(clock, max_segments=3, evict_lru=True)
    for segment in ("s1", "s2", "s3"):
        await learn(router, segment)
        clock.advance(1)
    await router.route("chat", "s1", CTX, ARMS)  # s1 is now the most recent
    await learn(router, "s4")
    assert {key.segment for key in store.models()} == {"s1", "s3", "s4"}
    assert store.evicted_segments == 1
    listed = await store.segments("chat")
    assert [s.segment for s in listed] == ["s4", "s1", "s3"]
    assert [s.version for s in listed] == [1, 1, 1]


async def test_idle_segments_expire_after_their_ttl(clock: FakeClock) -> None:
    """A segment no Route used for segment_idle_ttl_s is forgotten by the sweep."""
    router, store = make_router(clock)
    await learn(router, "old")
    clock.advance(3000)
    await learn(router, "young")
    clock.advance(601)
    await router.expire()
    assert {key.segment for key in store.models()} == {"young"}
    assert store.expired_segments == 1


async def test_a_late_reward_of_a_forgotten_segment_registers_it_again(clock: FakeClock) -> None:
    """Deleting a segment does not lose a pending decision: its reward re-creates the model."""
    router, store = make_router(clock)
    d = await router.route("chat", "s", CTX, ARMS)
    assert await store.delete_segment("chat", "s")
    await router.feedback(d.decision_id, 1.0, {})
    assert store.models()[ModelKey("chat", "s")][d.arm].n == 1
    assert [s.segment for s in await store.segments("chat")] == ["s"]


async def test_auto_created_policies_are_capped(clock: FakeClock) -> None:
    """5,000 auto-created policies: the 101st is RESOURCE_EXHAUSTED (max_auto_policies)."""
    template = PolicyConfig(name="t", allow_new_arms=True)
    router, _ = make_router(clock, template=template)
    refused = 0
    for i in range(5_000):
        try:
            await router.route(f"p{i}", "", Context(), [Candidate("m")])
        except ResourceExhaustedError:
            refused += 1
    assert refused == 4_900
    with pytest.raises(ResourceExhaustedError, match="max_auto_policies"):
        await router.route("one-more", "", Context(), [Candidate("m")])
    assert len(router.policy_names) == 101  # chat + 100 auto-created


async def test_arms_added_by_allow_new_arms_are_capped(clock: FakeClock) -> None:
    """allow_new_arms routes to at most max_arms arms; a known arm still routes."""
    router, _ = make_router(clock, allow_new_arms=True, max_arms=4)
    await router.route("chat", "", CTX, [Candidate("c"), Candidate("d")])
    with pytest.raises(ResourceExhaustedError, match="max_arms"):
        await router.route("chat", "", CTX, [Candidate("e")])
    await router.route("chat", "", CTX, [Candidate("d")])
