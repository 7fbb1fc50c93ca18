"""Finding 1 of the robustness issue: one request must not poison a shared model.

Huge but finite features, costs, rewards and metrics are clipped or refused at the boundary,
scores and propensities stay finite, and an update that would make the state non-finite is
refused with the stored model unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from banditd.errors import InvalidRequestError, UpdateRefusedError
from banditd.features.schema import NumericExtractor, NumericFeature
from banditd.policies import linear
from banditd.policies.spec import PolicyConfig, PriceWeights, RewardFunction
from banditd.router import Router
from banditd.sim.traces import JsonlTraceWriter
from banditd.state.memory_store import InMemoryModelStore
from banditd.types import Candidate, Context, ModelKey, ModelSpec, Outcome, PendingDecision
from tests.conftest import FakeClock

CHAT = PolicyConfig(
    name="chat",
    arms=("a", "b", "c"),
    numeric=(NumericFeature("x1"), NumericFeature("tokens", mean=500, std=500, lo=0, hi=1e5)),
    reward=RewardFunction({"quality": 1.0, "latency_ms": -0.001}),
    price=PriceWeights(cost=1.0, latency_ms=0.001),
    reward_wait_s=60.0,
)
SHARED = PolicyConfig(
    name="shared", model="shared", arm_features=2, allow_new_arms=True,
    numeric=(NumericFeature("x1"),),
)  # fmt: skip
ARMS = [Candidate("a"), Candidate("b"), Candidate("c")]
EXTREME = (1e200, -1e200, 1e308, -1e308, 1.7976931348623157e308)


def make_router(clock: FakeClock, **changes: object) -> tuple[Router, InMemoryModelStore]:
    store = InMemoryModelStore()
    policies = {
        name: dataclasses.replace(config, **changes)  # type: ignore[arg-type]
        for name, config in (("chat", CHAT), ("shared", SHARED))
    }
    router = Router(
        policies,
        lambda p: NumericExtractor(
            p.numeric, p.allow_unknown_features, p.max_abs_z, p.clip_out_of_range
        ),
        store,
        clock,
        np.random.default_rng(0),
    )
    return router, store


def assert_models_finite(store: InMemoryModelStore) -> None:
    for states in store.models().values():
        for state in states.values():
            for array in (state.s, state.a_inv, state.b, state.theta):
                assert np.isfinite(array).all()
            np.linalg.cholesky(state.a_inv)  # A⁻¹ positive definite


def snapshot(store: InMemoryModelStore) -> dict[ModelKey, dict[str, bytes]]:
    """Every stored array's bytes: compared bit for bit."""
    return {
        key: {
            arm: b"".join(a.tobytes() for a in (st.s, st.a_inv, st.b, st.theta)) + bytes([st.n])
            for arm, st in states.items()
        }
        for key, states in store.models().items()
    }


@pytest.mark.parametrize("value", EXTREME)
async def test_huge_feature_is_clipped_and_the_model_stays_finite(
    clock: FakeClock, value: float
) -> None:
    """1e200 or 1e308 as a feature: scores and propensities finite, learned as the bound."""
    router, store = make_router(clock)
    d = await router.route("chat", "", Context(features={"x1": value}), ARMS)
    assert math.isfinite(d.propensity)
    assert np.isfinite(d.choice.score).all()
    assert np.isfinite(d.choice.bonus).all()
    assert (await router.feedback(d.decision_id, 1.0, {})).outcome is Outcome.APPLIED
    state = store.models()[ModelKey("chat")][d.arm]
    assert state.b[1] == math.copysign(8.0, value)  # max_abs_z standard deviations
    after = await router.route("chat", "", Context(features={"x1": 0.5}), ARMS)
    assert np.isfinite(after.choice.score).all()
    assert router.clipped() == {"chat": 1}
    assert_models_finite(store)


async def test_out_of_range_feature_is_refused_naming_it_when_the_policy_rejects(
    clock: FakeClock,
) -> None:
    """out_of_range = 'reject': INVALID_ARGUMENT with the feature, its range and the fix."""
    router, store = make_router(clock, clip_out_of_range=False)
    with pytest.raises(InvalidRequestError, match=r"feature 'x1' is 1e\+200, outside .*\[-8, 8\]"):
        await router.route("chat", "", Context(features={"x1": 1e200}), ARMS)
    with pytest.raises(InvalidRequestError, match=r"'tokens' is -1, outside .*\[0, 4500\]"):
        await router.route("chat", "", Context(features={"tokens": -1.0}), ARMS)
    assert store.pending_count == 0
    ok = await router.route("chat", "", Context(features={"tokens": 4500.0, "x1": -8.0}), ARMS)
    assert ok.arm in {"a", "b", "c"}


async def test_declared_raw_bounds_clip_before_the_z_bound(clock: FakeClock) -> None:
    """A feature's min/max narrow its range: tokens in [0, 1e5] with z <= 8 gives [0, 4500]."""
    router, store = make_router(clock)
    d = await router.route("chat", "", Context(features={"tokens": -50.0}), ARMS)
    await router.feedback(d.decision_id, 1.0, {})
    assert store.models()[ModelKey("chat")][d.arm].b[2] == (0.0 - 500) / 500


@pytest.mark.parametrize("cost", [-1e308, 1e308, -1e200])
async def test_huge_candidate_cost_gives_finite_propensities(clock: FakeClock, cost: float) -> None:
    """A cost of -1e308 made the propensity NaN; now it is clipped to ±price.max_cost."""
    router, _ = make_router(clock)
    d = await router.route("chat", "", Context(), [Candidate("a", cost=cost), Candidate("b")])
    assert np.isfinite(d.choice.propensity).all()
    assert np.isfinite(d.choice.score).all()
    assert d.choice.penalty[0] == math.copysign(1e6, cost)
    strict, _ = make_router(clock, clip_out_of_range=False)
    with pytest.raises(InvalidRequestError, match=r"candidate .a. has cost .*price.max_cost"):
        await strict.route("chat", "", Context(), [Candidate("a", cost=cost), Candidate("b")])


async def test_huge_latency_and_arm_features_are_bounded(clock: FakeClock) -> None:
    """Expected latency beyond an hour and arm features beyond ±1000 are clipped (or refused)."""
    router, store = make_router(clock)
    d = await router.route("chat", "", Context(), [Candidate("a", expected_latency_ms=1e300)])
    assert d.choice.penalty[0] == pytest.approx(3600.0)
    ctx = Context(features={"x1": 1.0})
    shared = await router.route("shared", "", ctx, [Candidate("m", (1e300, -1e300))])
    assert (await router.feedback(shared.decision_id, 1.0, {})).outcome is Outcome.APPLIED
    assert_models_finite(store)
    assert np.abs(store.models()[ModelKey("shared")]["*"].b).max() == 1000.0
    strict, _ = make_router(clock, clip_out_of_range=False)
    with pytest.raises(InvalidRequestError, match="max_abs_arm_feature"):
        await strict.route("shared", "", ctx, [Candidate("m", (1e300, 0.0))])


@pytest.mark.parametrize(
    ("reward", "metrics", "match"),
    [
        (1e308, {}, r"reward 1e\+308 is outside the policy's reward range \[-1000, 1000\]"),
        (-1e200, {}, "outside the policy's reward range"),
        (None, {"quality": 1e308, "latency_ms": 0.0}, r"metric 'quality' is 1e\+308, outside"),
        (None, {"quality": 1.0, "latency_ms": -1e300}, "metric 'latency_ms'"),
        (None, {"quality": 1e8, "latency_ms": 0.0}, "reward range"),
    ],
)
async def test_huge_rewards_and_metrics_are_refused_and_change_nothing(
    clock: FakeClock, reward: float | None, metrics: dict[str, float], match: str
) -> None:
    """Rewards and metrics of 1e308 were APPLIED; now INVALID_ARGUMENT, the decision pending."""
    router, store = make_router(clock)
    d = await router.route("chat", "", Context(), ARMS)
    await router.feedback((await router.route("chat", "", Context(), ARMS)).decision_id, 1.0, {})
    before = snapshot(store)
    with pytest.raises(InvalidRequestError, match=match):
        await router.feedback(d.decision_id, reward, metrics)
    assert snapshot(store) == before
    assert (await router.feedback(d.decision_id, 0.5, {})).outcome is Outcome.APPLIED


async def test_reward_out_of_range_is_clipped_when_the_policy_says_so(clock: FakeClock) -> None:
    """reward.out_of_range = 'clip' learns the bound instead of refusing."""
    reward = dataclasses.replace(CHAT.reward, lo=0.0, hi=1.0, clip=True)
    router, _ = make_router(clock, reward=reward)
    d = await router.route("chat", "", Context(), ARMS)
    assert (await router.feedback(d.decision_id, 7.0, {})).reward == 1.0
    d = await router.route("chat", "", Context(), ARMS)
    with pytest.raises(InvalidRequestError, match="finite"):
        await router.feedback(d.decision_id, math.inf, {})


finite = st.floats(-1e308, 1e308, allow_nan=False, allow_infinity=False)
# The guards below are a backstop behind the bounds: they meet overflows, which numpy reports
# as RuntimeWarnings (errors under pytest's filter) before the guard refuses the result.
overflow_ok = pytest.mark.filterwarnings(
    "ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning"
)


@overflow_ok
@given(
    arrays(np.float64, 3, elements=finite),
    arrays(np.float64, 3, elements=finite),
    finite,
    st.integers(0, 3),
)
def test_update_is_finite_or_refused_and_leaves_the_state_alone(
    x0: np.ndarray, x: np.ndarray, reward: float, steps: int
) -> None:
    """Any finite update either gives a finite, positive definite state or UnsafeUpdateError;
    the state it started from is never changed (states are immutable, arrays read-only)."""
    state = linear.prior(3, 1.0)
    try:
        for _ in range(steps):
            state = linear.update(state, x0, 1.0)
    except linear.UnsafeUpdateError:
        return
    before = [a.copy() for a in (state.s, state.a_inv, state.b, state.theta)]
    try:
        after = linear.update(state, x, reward)
    except linear.UnsafeUpdateError:
        after = None
    for a, b in zip(before, (state.s, state.a_inv, state.b, state.theta), strict=True):
        np.testing.assert_array_equal(a, b)
    if after is not None:
        for array in (after.s, after.a_inv, after.b, after.theta):
            assert np.isfinite(array).all()
        assert np.all(np.diag(after.a_inv) > 0)


@overflow_ok
def test_from_sums_refuses_non_finite_or_indefinite_sums() -> None:
    """Sums that are NaN, infinite or make λI + S indefinite cannot become a state."""
    for s in (np.full((2, 2), np.nan), np.array([[np.inf, 0], [0, 1.0]]), -5.0 * np.eye(2)):
        with pytest.raises(linear.UnsafeUpdateError):
            linear.from_sums(s, np.zeros(2), 1, 1.0)


@overflow_ok
async def test_memory_store_refuses_an_unsafe_update_and_keeps_the_decision() -> None:
    """A pending vector that would overflow S (recorded before bounds existed): refused,
    counted, the model bit for bit unchanged, and the sweep drops it instead of retrying."""
    store = InMemoryModelStore()
    spec = ModelSpec(dim=2, default_reward=0.0, fingerprint="f")
    key = ModelKey("p")
    ok = PendingDecision("p:1", "p", "", "a", np.array([1.0, 2.0]), 1.0, 0, 0.0, 10.0)
    bad = PendingDecision("p:2", "p", "", "a", np.array([1e200, 1.0]), 1.0, 0, 0.0, 10.0)
    await store.record(ok)
    await store.record(bad)
    await store.settle("p:1", 1.0, 1.0, spec)
    before = snapshot(store)
    with pytest.raises(UpdateRefusedError, match="finite"):
        await store.settle("p:2", 1.0, 1.0, spec)
    assert snapshot(store) == before
    assert store.refused_updates == 1
    assert store.pending_count == 1
    done = await store.expire(11.0, 10, {"p": spec})
    assert [s.outcome for s in done] == [Outcome.DROPPED]
    assert store.pending_count == 0
    assert snapshot(store) == before
    assert (await store.load(key, ["a"], spec)).version == 1


def test_trace_is_strict_json_even_with_a_non_finite_number(tmp_path: Path) -> None:
    """A NaN that reached the trace was written as the bare token NaN (not JSON)."""
    writer = JsonlTraceWriter(tmp_path / "t.jsonl")
    writer.write({"type": "decision", "propensity": math.nan, "scores": [1.0, math.inf]})
    writer.close()

    def refuse(token: str) -> None:
        raise AssertionError(f"non-JSON token {token}")

    line = (tmp_path / "t.jsonl").read_text().strip()
    record = json.loads(line, parse_constant=refuse)
    assert record == {"type": "decision", "propensity": None, "scores": [1.0, None]}
