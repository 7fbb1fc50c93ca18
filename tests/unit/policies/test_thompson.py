"""Linear Thompson sampling: closed-form posterior, exact propensities, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import norm

from banditd.policies import linear, thompson


def _trained(rng: np.random.Generator, d: int, n: int, l2: float) -> tuple:
    xs = rng.normal(size=(n, d))
    rs = xs @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    state = linear.prior(d, l2)
    for x, r in zip(xs, rs, strict=True):
        state = linear.update(state, x, float(r))
    return state, xs, rs


@given(st.integers(1, 5), st.integers(0, 30), st.floats(0.1, 5), st.integers(0, 2**32 - 1))
def test_posterior_matches_bayesian_linear_regression(d: int, n: int, l2: float, seed: int) -> None:
    """θ and v²A⁻¹ equal the closed-form Gaussian posterior with prior N(0, v²/λ I)."""
    rng = np.random.default_rng(seed)
    state, xs, rs = _trained(rng, d, n, l2)
    precision = l2 * np.eye(d) + xs.T @ xs
    cov = np.linalg.inv(precision)
    np.testing.assert_allclose(state.a_inv, cov, atol=1e-9 * (1 + np.abs(cov).max()))
    np.testing.assert_allclose(state.theta, cov @ xs.T @ rs, atol=1e-7)


def test_sampled_scores_have_the_posterior_marginal() -> None:
    """Across draws, an arm's sampled value has mean θ·x and std v·sqrt(xᵀA⁻¹x)."""
    rng = np.random.default_rng(5)
    state, _, _ = _trained(rng, 3, 10, 1.0)
    x = np.array([0.5, -1.0, 2.0])
    params = thompson.ThompsonParams(v=0.7)
    draws = np.array(
        [thompson.choose([state], [x], np.zeros(1), params, rng).bonus[0] for _ in range(20000)]
    )
    width = float(np.sqrt(x @ state.a_inv @ x))
    assert abs(draws.mean()) < 4 * params.v * width / np.sqrt(len(draws))
    assert draws.std() == pytest.approx(params.v * width, rel=0.03)


@settings(max_examples=25)
@given(st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_propensities_match_monte_carlo(k: int, seed: int) -> None:
    """The 1-D integral for P(argmax = a) agrees with simulation of the policy itself."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 1, k)
    std = np.exp(rng.normal(-1, 1.2, k))
    p = thompson.propensities(mean, std)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    n = 100_000
    wins = np.bincount((mean + std * rng.standard_normal((n, k))).argmax(axis=1), minlength=k)
    np.testing.assert_allclose(p, wins / n, atol=0.006)


def _propensity_by_quadrature(mean: np.ndarray, std: np.ndarray, a: int) -> float:
    """P(a is the argmax) = ∫ φ_a(t) Π_{j≠a} Φ_j(t) dt by adaptive quadrature (independent)."""
    others = [j for j in range(mean.shape[0]) if j != a]

    def integrand(z: float) -> float:
        t = mean[a] + std[a] * z
        return float(norm.pdf(z) * np.prod(norm.cdf((t - mean[others]) / std[others])))

    # Break points where other arms' CDFs step, in arm a's standard units.
    steps = sorted({float(np.clip((mean[j] - mean[a]) / std[a], -12, 12)) for j in others})
    value, _ = integrate.quad(integrand, -12, 12, points=steps or None, limit=400)
    return float(value)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 16),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.01, 1.0, 100.0]),
    st.floats(-6, 1),
)
def test_propensities_match_quadrature(k: int, seed: int, scale: float, log_std: float) -> None:
    """Every arm's propensity is within 1.5e-3 of an independent adaptive quadrature.

    Means and standard deviations span several orders of magnitude, so some arms have no
    chance (the cutoff gives them exactly 0) and some CDFs are near-steps.
    """
    rng = np.random.default_rng(seed)
    mean = scale * rng.normal(0, 1, k)
    std = scale * np.exp(log_std + rng.uniform(-3, 3, k))
    p = thompson.propensities(mean, std)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    expected = np.array([_propensity_by_quadrature(mean, std, a) for a in range(k)])
    np.testing.assert_allclose(p, expected, atol=1.5e-3)


class _RiggedRng:
    """A generator whose normal draws are fixed: forces a draw far into one arm's tail."""

    def __init__(self, draws: list[float]) -> None:
        self._draws = np.array(draws)

    def standard_normal(self, size: int) -> np.ndarray:
        return self._draws[:size].copy()


def test_a_draw_beyond_the_cutoff_still_logs_a_positive_propensity() -> None:
    """Arm 1 sits 9 posterior std below arm 0, so the cutoff gives it 0; if its draw wins
    anyway, the chosen arm's propensity is recomputed without the cutoff and is > 0."""
    state = linear.prior(1, 1.0)  # A⁻¹ = 1, so std = v·|x|
    x = np.array([0.1])
    params = thompson.ThompsonParams(v=1.0)
    assert thompson.propensities(np.array([0.0, -1.3]), np.array([0.1, 0.1]))[1] == 0.0
    penalty = np.array([0.0, 1.3])  # arm 1's mean is 0 - 1.3
    choice = thompson.choose(
        [state, state],
        [x, x],
        penalty,
        params,
        _RiggedRng([-1.0, 13.0]),  # type: ignore[arg-type]
    )
    assert choice.index == 1
    assert 0.0 < choice.propensity[1] < 1e-12
    assert choice.propensity.sum() == pytest.approx(1.0)


def test_chosen_arm_propensity_is_reported_with_epsilon_floor() -> None:
    """With ε, every arm keeps at least ε/K and the propensities still sum to 1."""
    rng = np.random.default_rng(2)
    states = [_trained(rng, 2, 20, 1.0)[0] for _ in range(3)]
    x = np.array([1.0, 0.3])
    choice = thompson.choose(
        states, [x] * 3, np.zeros(3), thompson.ThompsonParams(v=0.2, epsilon=0.3), rng
    )
    assert choice.propensity.sum() == pytest.approx(1.0)
    assert choice.propensity.min() >= 0.1 - 1e-12


def test_same_seed_gives_the_same_choices() -> None:
    """Thompson sampling takes its randomness only from the injected generator."""
    states = [linear.prior(2, 1.0)] * 5
    x = np.array([1.0, -0.5])
    params = thompson.ThompsonParams()

    def run(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        return [thompson.choose(states, [x] * 5, np.zeros(5), params, rng).index for _ in range(50)]

    assert run(11) == run(11)
    assert run(11) != run(12)
