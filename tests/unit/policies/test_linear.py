"""Properties of the ridge statistics: incremental equals batch, order-free, well conditioned."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from banditd.policies import linear

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@st.composite
def histories(draw: st.DrawFn, max_dim: int = 6, max_len: int = 25) -> tuple:
    d, n = draw(st.integers(1, max_dim)), draw(st.integers(0, max_len))
    xs = draw(arrays(np.float64, (n, d), elements=finite))
    rs = draw(arrays(np.float64, (n,), elements=st.floats(-1, 1)))
    l2 = draw(st.floats(0.1, 10))
    return xs, rs, l2


def replay(xs: np.ndarray, rs: np.ndarray, l2: float) -> linear.ArmState:
    state = linear.prior(xs.shape[1], l2)
    for x, r in zip(xs, rs, strict=True):
        state = linear.update(state, x, float(r))
    return state


@given(histories())
def test_incremental_updates_equal_batch_ridge_solve(h: tuple) -> None:
    """Sherman–Morrison rank-one steps give the direct ridge solution (A⁻¹ and θ)."""
    xs, rs, l2 = h
    state = replay(xs, rs, l2)
    a_inv, theta = linear.batch_solve(xs, rs, l2)
    scale = 1.0 + np.abs(a_inv).max()
    np.testing.assert_allclose(state.a_inv, a_inv, atol=1e-8 * scale, rtol=1e-6)
    np.testing.assert_allclose(state.theta, theta, atol=1e-6 * (1 + np.abs(theta).max()))
    assert state.n == len(xs)


@given(histories(), st.randoms(use_true_random=False))
def test_update_order_does_not_matter(h: tuple, rnd: object) -> None:
    """Delayed feedback arrives in any order; the statistics must not care."""
    xs, rs, l2 = h
    perm = list(range(len(xs)))
    rnd.shuffle(perm)  # type: ignore[attr-defined]
    a, b = replay(xs, rs, l2), replay(xs[perm], rs[perm], l2)
    np.testing.assert_allclose(a.s, b.s, atol=1e-9)
    np.testing.assert_allclose(a.b, b.b, atol=1e-9)
    np.testing.assert_allclose(a.a_inv, b.a_inv, atol=1e-8 * (1 + np.abs(a.a_inv).max()))


@given(histories())
def test_gram_matrix_stays_positive_definite(h: tuple) -> None:
    """A = λI + S is positive definite and A⁻¹ really is its inverse."""
    xs, rs, l2 = h
    state = replay(xs, rs, l2)
    a = state.s + l2 * np.eye(state.dim)
    np.linalg.cholesky(a)
    np.testing.assert_allclose(state.a_inv @ a, np.eye(state.dim), atol=1e-6)


@given(histories(), st.floats(0.01, 1.0))
def test_decay_keeps_the_prior(h: tuple, factor: float) -> None:
    """Stabilised forgetting scales only the data: A = λI + γS ≥ λI, so A⁻¹ ≤ I/λ."""
    xs, rs, l2 = h
    state = linear.decay(replay(xs, rs, l2), factor)
    np.testing.assert_allclose(state.s, factor * replay(xs, rs, l2).s, atol=1e-9)
    eigenvalues = np.linalg.eigvalsh(state.a_inv)
    assert eigenvalues.max() <= 1.0 / l2 + 1e-9
    assert eigenvalues.min() > 0


def test_refresh_matches_rank_one_path_after_many_steps() -> None:
    """After REFRESH_EVERY steps A⁻¹ is re-derived from S and still equals the batch inverse."""
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(linear.REFRESH_EVERY + 10, 4))
    rs = rng.normal(size=len(xs))
    state = replay(xs, rs, 1.0)
    a_inv, theta = linear.batch_solve(xs, rs, 1.0)
    assert state.steps < linear.REFRESH_EVERY
    np.testing.assert_allclose(state.a_inv, a_inv, atol=1e-10)
    np.testing.assert_allclose(state.theta, theta, atol=1e-8)


def test_interaction_contains_the_context_itself() -> None:
    """x ⊗ [1, z] starts with x (the shared effect) followed by the x·z_j terms."""
    x, z = np.array([1.0, 2.0]), np.array([3.0])
    np.testing.assert_array_equal(linear.interaction(x, z), [1.0, 3.0, 2.0, 6.0])
