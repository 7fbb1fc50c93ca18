"""Pure regret metrics: cumulative sums, bands, log-log slopes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from banditd.sim.metrics import band, cumulative_regret, loglog_slope, mean_interval

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False)


@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=finite))
def test_band_contains_the_mean(curves):
    """lo ≤ mean ≤ hi everywhere, and the band collapses with one seed."""
    b = band(curves)
    assert np.all(b.lo <= b.mean + 1e-9)
    assert np.all(b.mean <= b.hi + 1e-9)
    if curves.shape[0] == 1:
        np.testing.assert_array_equal(b.lo, b.hi)


@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(0, 10)))
def test_cumulative_regret_is_nondecreasing_when_best_dominates(gap):
    """Regret against an oracle that is never worse never decreases."""
    regret = cumulative_regret(gap + 1.0, np.ones_like(gap))
    assert np.all(np.diff(regret) >= 0)
    assert regret[-1] == pytest.approx(gap.sum())


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0 / 3.0])
def test_loglog_slope_recovers_power_laws(power):
    """R_t = c·t^p has slope p on a log-log plot."""
    t = np.arange(1, 5001, dtype=np.float64)
    assert loglog_slope(3.0 * t**power) == pytest.approx(power, abs=1e-9)


def test_loglog_slope_is_nan_without_positive_regret():
    """No positive points, no slope."""
    assert np.isnan(loglog_slope(np.zeros(10)))


def test_mean_interval_narrows_with_more_samples():
    """The normal interval of the mean shrinks like 1/√n."""
    rng = np.random.default_rng(0)
    _, lo1, hi1 = mean_interval(rng.standard_normal(100))
    _, lo2, hi2 = mean_interval(rng.standard_normal(10_000))
    assert hi2 - lo2 < 0.2 * (hi1 - lo1)


def test_band_uses_student_t_for_few_seeds():
    """With 5 seeds the 95% half-width is t_4 = 2.776 standard errors, not 1.96."""
    curves = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    b = band(curves)
    se = np.std(curves[:, 0], ddof=1) / np.sqrt(5)
    assert b.hi[0] - b.mean[0] == pytest.approx(2.7764451 * se, rel=1e-6)
