"""LinUCB: scores, propensities, and identical decisions to MABWiser's LinUCB."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from banditd.policies import linear, linucb
from banditd.policies.choice import greedy_propensities


def _states(rng: np.random.Generator, k: int, d: int, n: int) -> list[linear.ArmState]:
    states = []
    for _ in range(k):
        s = linear.prior(d, 1.0)
        for _ in range(n):
            s = linear.update(s, rng.normal(size=d), float(rng.normal()))
        states.append(s)
    return states


@given(st.floats(0, 5), st.floats(0, 5), st.integers(0, 2**32 - 1))
def test_score_is_monotone_in_alpha(a1: float, a2: float, seed: int) -> None:
    """More exploration width never lowers an arm's UCB."""
    rng = np.random.default_rng(seed)
    states = _states(rng, 3, 3, 4)
    x = rng.normal(size=3)
    lo, hi = sorted((a1, a2))
    e1, b1 = linucb.scores(states, [x] * 3, lo)
    e2, b2 = linucb.scores(states, [x] * 3, hi)
    np.testing.assert_array_equal(e1, e2)
    assert np.all(b2 >= b1 - 1e-12)


@given(arrays(np.float64, st.integers(1, 12), elements=st.floats(-5, 5)), st.floats(0, 1))
def test_propensities_sum_to_one_and_favour_the_best(score: np.ndarray, eps: float) -> None:
    """p sums to 1, every arm gets at least ε/K, and the argmax gets the most."""
    p = greedy_propensities(score, eps)
    assert abs(p.sum() - 1.0) < 1e-12
    assert np.all(p >= eps / len(score) - 1e-15)
    assert p[int(np.argmax(score))] == p.max()


def test_tied_arms_share_the_propensity_and_are_chosen_uniformly() -> None:
    """With every arm at the prior, UCB ties: each arm has propensity 1/K and is picked ~1/K."""
    states = [linear.prior(2, 1.0)] * 4
    x = np.array([1.0, 0.5])
    rng = np.random.default_rng(0)
    params = linucb.LinUCBParams(alpha=1.0)
    picks = [linucb.choose(states, [x] * 4, np.zeros(4), params, rng) for _ in range(4000)]
    np.testing.assert_allclose(picks[0].propensity, 0.25)
    counts = np.bincount([c.index for c in picks], minlength=4) / 4000
    np.testing.assert_allclose(counts, 0.25, atol=0.03)


def test_penalty_moves_the_choice() -> None:
    """A selection-time price large enough makes the otherwise best arm lose."""
    rng = np.random.default_rng(1)
    states = _states(rng, 2, 2, 5)
    x = np.array([1.0, 0.2])
    params = linucb.LinUCBParams(alpha=0.0)
    free = linucb.choose(states, [x, x], np.zeros(2), params, rng)
    penalty = np.zeros(2)
    penalty[free.index] = 100.0
    priced = linucb.choose(states, [x, x], penalty, params, rng)
    assert priced.index != free.index


def test_linucb_makes_the_same_decisions_as_mabwiser() -> None:
    """On one stream and one alpha, banditd's LinUCB picks exactly MABWiser's arms."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mabwiser.mab import MAB, LearningPolicy

    rng = np.random.default_rng(42)
    d, k, alpha, steps = 5, 4, 1.25, 300
    theta = rng.normal(size=(k, d))
    arms = list(range(k))
    ours = [linear.prior(d, 1.0) for _ in arms]
    # Warm start: each arm sees one observation, so no ties at the prior remain.
    warm_x = rng.normal(size=(k, d))
    warm_r = np.array([theta[a] @ warm_x[a] for a in arms])
    mab = MAB(arms, LearningPolicy.LinUCB(alpha=alpha, l2_lambda=1.0), seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mab.fit(arms, warm_r, warm_x)
    for a in arms:
        ours[a] = linear.update(ours[a], warm_x[a], float(warm_r[a]))
    params = linucb.LinUCBParams(alpha=alpha)
    agree = 0
    for _ in range(steps):
        x = rng.normal(size=d)
        choice = linucb.choose(ours, [x] * k, np.zeros(k), params, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = mab.predict(x[None, :])
            expectations = mab.predict_expectations(x[None, :])
        np.testing.assert_allclose(
            choice.estimate + choice.bonus, [expectations[a] for a in arms], rtol=1e-9, atol=1e-9
        )
        agree += int(choice.index == theirs)
        reward = float(theta[choice.index] @ x + 0.1 * rng.normal())
        ours[choice.index] = linear.update(ours[choice.index], x, reward)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mab.partial_fit([choice.index], [reward], x[None, :])
    assert agree == steps


def test_params_are_validated() -> None:
    """Negative alpha or non-positive l2 fail at construction."""
    with pytest.raises(ValueError):
        linucb.LinUCBParams(alpha=-1.0)
    with pytest.raises(ValueError):
        linucb.LinUCBParams(l2=0.0)


@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_vectorised_scores_equal_per_arm_formulas(k: int, d: int, seed: int) -> None:
    """Disjoint, shared and mixed paths all give θ·x and α·sqrt(xᵀA⁻¹x) per candidate."""
    rng = np.random.default_rng(seed)
    states = _states(rng, k, d, 3)
    xs = [rng.normal(size=d) for _ in range(k)]
    x = rng.normal(size=d)

    def expected(sts: list[linear.ArmState], vs: list[np.ndarray]) -> tuple:
        est = [s.theta @ v for s, v in zip(sts, vs, strict=True)]
        width = [0.7 * np.sqrt(v @ s.a_inv @ v) for s, v in zip(sts, vs, strict=True)]
        return np.array(est), np.array(width)

    for sts, vs in ((states, [x] * k), ([states[0]] * k, xs), (states, xs)):
        got = linucb.scores(sts, vs, 0.7)
        want = expected(sts, vs)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-10)


def test_restack_copies_only_changed_rows_and_equals_a_fresh_stack() -> None:
    """The router's cached stack, patched after one update, equals stacking anew."""
    rng = np.random.default_rng(9)
    states = _states(rng, 4, 3, 2)
    block = linear.stack(states)
    updated = list(states)
    updated[2] = linear.update(states[2], rng.normal(size=3), 1.0)
    assert not linear.restack(block, states, states)  # nothing changed
    assert linear.restack(block, states, updated)
    fresh = linear.stack(updated)
    np.testing.assert_array_equal(block.rows, fresh.rows)
    np.testing.assert_array_equal(block.a_inv[2], updated[2].a_inv)
    np.testing.assert_array_equal(block.theta[2], updated[2].theta)


@given(
    st.integers(2, 8), st.integers(1, 6), st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 0.1, 1.0]), st.booleans(),
)  # fmt: skip
def test_stacked_choice_equals_the_generic_one_bit_for_bit(
    k: int, d: int, seed: int, epsilon: float, priced: bool
) -> None:
    """choose_stacked (Python floats for the K-sized part) = choose (numpy), same draws.

    (K >= 2: the Router stacks only then; choose's K = 1 path multiplies in another order.)
    """
    rng = np.random.default_rng(seed)
    states = _states(rng, k, d, 3)
    if seed % 3 == 0:
        # Exact ties (a distinct but equal state): the tie-break must consume the same draws.
        states[-1] = dataclasses.replace(states[0])
    x = rng.normal(size=d)
    penalty = rng.uniform(0, 1, size=k) if priced else np.zeros(k)
    params = linucb.LinUCBParams(alpha=0.7, epsilon=epsilon)
    generic = linucb.choose(states, [x] * k, penalty, params, np.random.default_rng(seed))
    fast = linucb.choose_stacked(
        linear.stack(states), x, penalty, params, np.random.default_rng(seed)
    )
    assert fast.index == generic.index
    for field in ("estimate", "bonus", "score", "propensity"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(generic, field))
    assert fast.floats is not None
    assert fast.floats == (
        generic.estimate.tolist(),
        generic.bonus.tolist(),
        generic.score.tolist(),
    )
