"""Router validation and learning, with the in-memory store and a fake clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditd.errors import (
    DecisionExpiredError,
    DecisionNotFoundError,
    InvalidRequestError,
    UnknownPolicyError,
)
from banditd.features.schema import NumericExtractor, NumericFeature
from banditd.policies.spec import PolicyConfig, PriceWeights, RewardFunction
from banditd.router import Router
from banditd.state.memory_store import InMemoryModelStore
from banditd.types import Candidate, Context, Outcome
from tests.conftest import FakeClock

CHAT = PolicyConfig(
    name="chat",
    arms=("a", "b", "c"),
    numeric=(NumericFeature("x1"), NumericFeature("x2")),
    reward=RewardFunction({"quality": 1.0, "latency_ms": -0.001}),
    price=PriceWeights(cost=1.0),
    reward_wait_s=60.0,
)
SHARED = PolicyConfig(
    name="shared", model="shared", arm_features=2, allow_new_arms=True,
    numeric=(NumericFeature("x1"),),
)  # fmt: skip


def make_router(clock: FakeClock, **kw: object) -> tuple[Router, InMemoryModelStore]:
    store = InMemoryModelStore()
    router = Router(
        {"chat": CHAT, "shared": SHARED},
        lambda p: NumericExtractor(p.numeric, p.allow_unknown_features),
        store,
        clock,
        np.random.default_rng(0),
        **kw,  # type: ignore[arg-type]
    )
    return router, store


ARMS = [Candidate("a"), Candidate("b"), Candidate("c")]
CTX = Context(features={"x1": 0.5})


@pytest.mark.parametrize(
    ("candidates", "context", "match"),
    [
        ([], CTX, "no candidates"),
        ([Candidate("a"), Candidate("a")], CTX, "duplicate candidate"),
        ([Candidate("zzz")], CTX, "unknown arm 'zzz'"),
        ([Candidate("a", cost=math.nan)], CTX, "non-finite cost"),
        ([Candidate("a", features=(1.0,))], CTX, "disjoint"),
        ([Candidate("a b")], CTX, "printable"),
        (ARMS, Context(features={"x1": math.inf}), "must be finite"),
        (ARMS, Context(features={"typo": 1.0}), "unknown feature 'typo'"),
        (ARMS, Context(embedding=(1.0,)), "embeddings"),
    ],
)
async def test_bad_route_requests_are_invalid_and_change_nothing(
    clock: FakeClock, candidates: list[Candidate], context: Context, match: str
) -> None:
    """Malformed input raises InvalidRequestError and logs no decision."""
    router, store = make_router(clock)
    with pytest.raises(InvalidRequestError, match=match):
        await router.route("chat", "", context, candidates)
    assert store.pending_count == 0


async def test_unknown_policy(clock: FakeClock) -> None:
    """An undeclared policy is refused unless a template auto-creates it."""
    router, _ = make_router(clock)
    with pytest.raises(UnknownPolicyError, match="declared policies: chat, shared"):
        await router.route("nope", "", CTX, ARMS)
    auto, _ = make_router(clock, template=PolicyConfig(name="t", allow_new_arms=True))
    result = await auto.route("nope", "", Context(), [Candidate("m1")])
    assert result.arm == "m1"


async def test_feedback_metrics_are_combined_by_the_reward_function(clock: FakeClock) -> None:
    """reward = Σ w·metric; unknown or missing metrics are invalid."""
    router, _ = make_router(clock)
    d = await router.route("chat", "", CTX, ARMS)
    with pytest.raises(InvalidRequestError, match="unknown metrics"):
        await router.feedback(d.decision_id, None, {"quality": 1.0, "oops": 1.0})
    with pytest.raises(InvalidRequestError, match="missing metrics"):
        await router.feedback(d.decision_id, None, {"quality": 1.0})
    with pytest.raises(InvalidRequestError, match="finite"):
        await router.feedback(d.decision_id, math.nan, {})
    result = await router.feedback(d.decision_id, None, {"quality": 1.0, "latency_ms": 500.0})
    assert (result.outcome, result.reward) == (Outcome.APPLIED, 0.5)


async def test_delayed_duplicate_and_expired_feedback(clock: FakeClock) -> None:
    """In time: applied once; again: duplicate; after the window: expired; garbage: not found."""
    router, _ = make_router(clock)
    d1 = await router.route("chat", "", CTX, ARMS)
    d2 = await router.route("chat", "", CTX, ARMS)
    clock.advance(59.0)
    assert (await router.feedback(d1.decision_id, 1.0, {})).outcome is Outcome.APPLIED
    assert (await router.feedback(d1.decision_id, 1.0, {})).outcome is Outcome.DUPLICATE
    clock.advance(2.0)
    with pytest.raises(DecisionExpiredError, match=r"default reward 0\.0"):
        await router.feedback(d2.decision_id, 1.0, {})
    with pytest.raises(DecisionNotFoundError, match="unknown"):
        await router.feedback("chat:deadbeef", 1.0, {})
    with pytest.raises(InvalidRequestError, match="not one this daemon issued"):
        await router.feedback("garbage", 1.0, {})


async def test_router_learns_the_better_arm(clock: FakeClock) -> None:
    """With reward 1 for 'b' and 0 otherwise, LinUCB ends up choosing 'b'."""
    router, _ = make_router(clock)
    for _ in range(60):
        d = await router.route("chat", "", CTX, ARMS)
        await router.feedback(d.decision_id, 1.0 if d.arm == "b" else 0.0, {})
    picks = [(await router.route("chat", "", CTX, ARMS)).arm for _ in range(10)]
    assert picks.count("b") == 10


async def test_shared_model_scores_new_arms_from_their_features(clock: FakeClock) -> None:
    """A never-seen arm gets a learned estimate from its features in the shared model."""
    router, _ = make_router(clock)
    ctx = Context(features={"x1": 1.0})
    for _ in range(40):
        d = await router.route(
            "shared", "", ctx, [Candidate("good", (1.0, 0.0)), Candidate("bad", (0.0, 1.0))]
        )
        await router.feedback(d.decision_id, 1.0 if d.arm == "good" else -1.0, {})
    new = await router.route(
        "shared", "", ctx, [Candidate("new-good", (1.0, 0.0)), Candidate("new-bad", (0.0, 1.0))]
    )
    assert new.choice.estimate[0] > 0.5 > -0.5 > new.choice.estimate[1]
    assert new.arm == "new-good"


async def test_price_is_subtracted_at_selection_time(clock: FakeClock) -> None:
    """penalty = price.cost·cost shows in the scores and can flip the choice."""
    router, _ = make_router(clock)
    result = await router.route("chat", "", CTX, [Candidate("a", cost=5.0), Candidate("b")])
    np.testing.assert_allclose(result.choice.penalty, [5.0, 0.0])
    assert result.arm == "b"
