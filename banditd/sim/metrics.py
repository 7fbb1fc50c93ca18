"""Regret and reward curves, confidence bands over seeds, log-log growth rate. PURE (numpy).

Per step t of one run, with μ_t(a) the expected reward of arm a for that step's context:

    instantaneous regret  ρ_t = max_a μ_t(a) − μ_t(a_t)        (pseudo-regret: no noise)
    cumulative regret     R_T = Σ_{t≤T} ρ_t

Curves over S seeds are (S, T) arrays; `band` gives the mean and a Student-t confidence band
of the mean across seeds (t with S−1 degrees of freedom: with 5 seeds the half-width is
2.78·sd/√S, not the normal 1.96·sd/√S). `loglog_slope` fits log R_t = c + s·log t over the
late part of a curve: s ≈ 1 means linear regret (no learning), s ≈ ½ is the √T rate of LinUCB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import stdtrit

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Band:
    """Mean curve with a confidence band of the mean over seeds (lo ≤ mean ≤ hi)."""

    mean: Array
    lo: Array
    hi: Array
    seeds: int


def cumulative(values: Array) -> Array:
    """Running sum along the last axis (step axis)."""
    return np.cumsum(np.asarray(values, dtype=np.float64), axis=-1)


def instant_regret(best: Array, chosen: Array) -> Array:
    """ρ_t = max_a μ_t(a) − μ_t(a_t); both arrays indexed by step."""
    return np.asarray(best, dtype=np.float64) - np.asarray(chosen, dtype=np.float64)


def cumulative_regret(best: Array, chosen: Array) -> Array:
    """R_t = Σ_{s≤t} (best_s − chosen_s)."""
    return cumulative(instant_regret(best, chosen))


def band(curves: Array, level: float = 0.95) -> Band:
    """Mean over seeds (axis 0) ± t_{S−1}·sd/√S, t the two-sided `level` quantile of Student's
    t; with one seed the band collapses to the mean."""
    data = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    seeds = data.shape[0]
    mean = data.mean(axis=0)
    if seeds < 2:
        return Band(mean, mean.copy(), mean.copy(), seeds)
    t = float(stdtrit(seeds - 1, 0.5 + level / 2.0))
    half = t * data.std(axis=0, ddof=1) / np.sqrt(seeds)
    return Band(mean, mean - half, mean + half, seeds)


def loglog_slope(curve: Array, start_fraction: float = 0.1) -> float:
    """Least-squares slope of log R_t against log t over t ≥ start_fraction·T (t from 1).

    Points with R_t ≤ 0 are left out (log undefined); returns nan if fewer than 2 remain.
    """
    if not 0.0 <= start_fraction < 1.0:
        raise ValueError(f"start_fraction must be in [0, 1), got {start_fraction}")
    values = np.asarray(curve, dtype=np.float64)
    steps = np.arange(1, values.shape[0] + 1, dtype=np.float64)
    start = int(start_fraction * values.shape[0])
    t, r = steps[start:], values[start:]
    keep = r > 0
    if int(keep.sum()) < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log(t[keep]), np.log(r[keep]), 1)
    return float(slope)


def mean_interval(values: Array, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the Student-t interval of a sample's mean."""
    b = band(np.asarray(values, dtype=np.float64)[:, None], level)
    return float(b.mean[0]), float(b.lo[0]), float(b.hi[0])
