"""InMemoryModelStore: exactly-once settlement, expiry rules, tombstones, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from banditd.errors import FailedPreconditionError, StateUnavailableError
from banditd.policies import linear
from banditd.state.memory_store import InMemoryModelStore
from banditd.types import ModelKey, ModelSpec, Outcome, PendingDecision

SPEC = ModelSpec(dim=2, l2=1.0, default_reward=0.0, fingerprint="f1")
KEY = ModelKey("p", "s")


def pending(i: int, t: float = 100.0, wait: float = 60.0, arm: str = "a") -> PendingDecision:
    return PendingDecision(f"p:{i}", "p", "s", arm, np.array([1.0, float(i)]), 0.5, 0, t, t + wait)


async def test_feedback_applies_once_and_repeat_is_duplicate() -> None:
    """The first reward updates the model; the second is DUPLICATE and changes nothing."""
    store = InMemoryModelStore()
    await store.record(pending(1))
    first = await store.settle("p:1", 1.0, 110.0, SPEC)
    snap = await store.load(KEY, ["a"], SPEC)
    second = await store.settle("p:1", 5.0, 111.0, SPEC)
    assert (first.outcome, first.model_version) == (Outcome.APPLIED, 1)
    assert (second.outcome, second.reward, second.model_version) == (Outcome.DUPLICATE, 1.0, 1)
    after = await store.load(KEY, ["a"], SPEC)
    assert after.version == snap.version == 1
    np.testing.assert_array_equal(after.arms["a"].b, [1.0, 1.0])


async def test_late_feedback_runs_the_expiry_rule_and_reports_expired() -> None:
    """Feedback after the deadline applies the default reward (not the late one): EXPIRED."""
    store = InMemoryModelStore()
    await store.record(pending(1))
    late = await store.settle("p:1", 1.0, 161.0, SPEC)
    assert (late.outcome, late.reward) == (Outcome.EXPIRED, 0.0)
    again = await store.settle("p:1", 1.0, 162.0, SPEC)
    assert again.outcome is Outcome.EXPIRED
    state = (await store.load(KEY, ["a"], SPEC)).arms["a"]
    assert state.n == 1
    np.testing.assert_array_equal(state.b, [0.0, 0.0])


async def test_expire_applies_defaults_and_drops_by_policy() -> None:
    """The sweep settles only due decisions: DEFAULTED with a default reward, else DROPPED."""
    store = InMemoryModelStore()
    for i in range(3):
        await store.record(pending(i, wait=10.0 * (i + 1)))
    drop = ModelSpec(dim=2, default_reward=None, fingerprint="f1")
    assert await store.expire(105.0, 100, {"p": SPEC}) == []
    done = await store.expire(125.0, 100, {"p": SPEC})
    assert [s.outcome for s in done] == [Outcome.DEFAULTED, Outcome.DEFAULTED]
    done = await store.expire(200.0, 100, {"p": drop})
    assert [s.outcome for s in done] == [Outcome.DROPPED]
    assert store.pending_count == 0
    assert (await store.load(KEY, ["a"], SPEC)).arms["a"].n == 2


async def test_expire_respects_its_limit() -> None:
    """At most `limit` decisions settle per sweep; the rest wait for the next one."""
    store = InMemoryModelStore()
    for i in range(5):
        await store.record(pending(i))
    assert len(await store.expire(1000.0, 2, {"p": SPEC})) == 2
    assert store.pending_count == 3


async def test_unknown_decision() -> None:
    """A decision never recorded is UNKNOWN."""
    assert (await InMemoryModelStore().settle("p:x", 1.0, 0.0, SPEC)).outcome is Outcome.UNKNOWN


async def test_state_equals_a_replay_of_the_applied_rewards() -> None:
    """Whatever order rewards arrive in, the arm state is the ridge fit of exactly those."""
    store = InMemoryModelStore()
    rng = np.random.default_rng(0)
    for i in range(20):
        await store.record(pending(i))
    order = rng.permutation(20)
    rewards = {int(i): float(rng.normal()) for i in order}
    for i in order:
        await store.settle(f"p:{i}", rewards[int(i)], 120.0, SPEC)
    xs = np.array([[1.0, float(i)] for i in range(20)])
    _a_inv, theta = linear.batch_solve(xs, np.array([rewards[i] for i in range(20)]), 1.0)
    state = (await store.load(KEY, ["a"], SPEC)).arms["a"]
    np.testing.assert_allclose(state.theta, theta, atol=1e-9)


async def test_model_under_another_pipeline_is_refused() -> None:
    """A fingerprint change fails loudly (FAILED_PRECONDITION) and keeps the decision pending."""
    store = InMemoryModelStore()
    await store.record(pending(1))
    await store.record(pending(2))
    await store.settle("p:1", 1.0, 110.0, SPEC)
    other = ModelSpec(dim=2, fingerprint="f2")
    with pytest.raises(FailedPreconditionError, match="feature pipeline"):
        await store.load(KEY, ["a"], other)
    with pytest.raises(FailedPreconditionError):
        await store.settle("p:2", 1.0, 110.0, other)
    assert store.pending_count == 1


async def test_decay_forgets_old_rewards_per_epoch() -> None:
    """With γ per interval, a reward one epoch old weighs γ in b."""
    spec = ModelSpec(dim=2, decay_factor=0.5, decay_interval_s=100.0, fingerprint="f1")
    store = InMemoryModelStore()
    await store.record(pending(1, t=0.0, wait=1000))
    await store.record(pending(2, t=0.0, wait=1000))
    await store.settle("p:1", 1.0, 50.0, spec)
    await store.settle("p:2", 1.0, 150.0, spec)
    b = (await store.load(KEY, ["a"], spec)).arms["a"].b
    np.testing.assert_allclose(b, 0.5 * np.array([1.0, 1.0]) + np.array([1.0, 2.0]))


async def test_pending_is_bounded() -> None:
    """Past max_pending, Route's record fails with a clear UNAVAILABLE error."""
    store = InMemoryModelStore(max_pending=1)
    await store.record(pending(1))
    with pytest.raises(StateUnavailableError, match="max_pending"):
        await store.record(pending(2))


def test_expiry_heap_stays_bounded_by_pending_decisions() -> None:
    """Settled decisions' heap entries are compacted away; the unsettled ones still expire."""
    store = InMemoryModelStore()
    for i in range(20_000):
        store.record_now(pending(i, wait=3600.0))
        if i % 100:  # 99 of every 100 get their reward
            assert store.settle_now(f"p:{i}", 1.0, 101.0, SPEC).outcome is Outcome.APPLIED
    assert store.pending_count == 200
    assert store.deadline_entries <= 2 * store.pending_count + 1024
    expired = store.expire_now(100.0 + 3601.0, 10_000, {"p": SPEC})
    assert sorted(s.decision_id for s in expired) == sorted(f"p:{i}" for i in range(0, 20_000, 100))
    assert all(s.outcome is Outcome.DEFAULTED for s in expired)
    assert store.pending_count == 0
