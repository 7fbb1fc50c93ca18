"""Off-policy evaluation: the value of a candidate policy π_e from logs of a behaviour policy.

Logged rows (x_i, a_i, r_i, p_i) with p_i = π_b(a_i|x_i); π_e(·|x_i) given as an (n, K)
matrix; q̂(x_i, a) an (n, K) reward model. With importance weight w_i = π_e(a_i|x_i)/p_i:

    IPS    V̂ = (1/n) Σ w_i r_i
    SNIPS  V̂ = Σ w_i r_i / Σ w_i                                  (self-normalised)
    DM     V̂ = (1/n) Σ_i Σ_a π_e(a|x_i) q̂(x_i, a)
    DR     V̂ = DM + (1/n) Σ w_i (r_i − q̂(x_i, a_i))               (doubly robust)

Confidence intervals: percentile bootstrap over rows (as obp's `estimate_interval` does) and,
for the estimators that are means of per-row terms (IPS, DM, DR), the normal approximation.
Numpy only; the evaluated policies come from sim/tune.py (`policy_distribution`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from banditd.sim.metrics import mean_interval

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ESTIMATORS = ("ips", "snips", "dm", "dr")


@dataclass(frozen=True, slots=True)
class Estimate:
    """Point estimate with a bootstrap interval and (for IPS/DM/DR) a normal one."""

    name: str
    value: float
    lo: float
    hi: float
    normal_lo: float = float("nan")
    normal_hi: float = float("nan")


def _weights(action: IntArray, pscore: Array, action_dist: Array) -> Array:
    if np.any(pscore <= 0):
        raise ValueError("propensities must be > 0 (a row logged with p = 0 cannot be weighted)")
    return np.asarray(action_dist[np.arange(action.shape[0]), action] / pscore, dtype=np.float64)


def round_values(
    name: str, reward: Array, action: IntArray, pscore: Array, action_dist: Array,
    q_hat: Array | None = None,
) -> tuple[Array, Array]:  # fmt: skip
    """(numerator, denominator) terms per row; the estimate is Σnum/Σden (den = 1 or w)."""
    n = action.shape[0]
    ones = np.ones(n)
    if name in ("ips", "snips", "dr"):
        w = _weights(action, pscore, action_dist)
    if name == "ips":
        return w * reward, ones
    if name == "snips":
        return w * reward, w
    if q_hat is None:
        raise ValueError(f"{name} needs a reward model q_hat")
    dm = np.asarray((action_dist * q_hat).sum(axis=1), dtype=np.float64)
    if name == "dm":
        return dm, ones
    if name == "dr":
        return dm + w * (reward - q_hat[np.arange(n), action]), ones
    raise ValueError(f"unknown estimator {name!r}; known: {ESTIMATORS}")


def estimate(
    reward: Array,
    action: IntArray,
    pscore: Array,
    action_dist: Array,
    q_hat: Array | None = None,
    estimators: tuple[str, ...] = ESTIMATORS,
    level: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Every requested estimator with its confidence intervals."""
    if action_dist.ndim != 2 or action_dist.shape[0] != action.shape[0]:
        raise ValueError("action_dist must be (n, n_actions)")
    rng = np.random.default_rng(seed)
    n = action.shape[0]
    out: dict[str, Estimate] = {}
    for name in estimators:
        if name in ("dm", "dr") and q_hat is None:
            continue
        num, den = round_values(name, reward, action, pscore, action_dist, q_hat)
        value = float(num.sum() / den.sum())
        boot = np.empty(n_bootstrap)
        for start in range(0, n_bootstrap, 64):
            idx = rng.integers(n, size=(min(64, n_bootstrap - start), n))
            boot[start : start + idx.shape[0]] = num[idx].sum(axis=1) / den[idx].sum(axis=1)
        tail = (1.0 - level) / 2.0
        lo, hi = np.quantile(boot, [tail, 1.0 - tail])
        normal = (float("nan"), float("nan"))
        if name != "snips":
            _, nlo, nhi = mean_interval(num, level)
            normal = (nlo, nhi)
        out[name] = Estimate(name, value, float(lo), float(hi), *normal)
    return out


def fit_reward_model(
    x: Array, action: IntArray, reward: Array, n_actions: int, l2: float = 10.0, folds: int = 2,
    seed: int = 0,
) -> Array:  # fmt: skip
    """q̂(x_i, a) = r̄ + per-arm ridge regression of (r − r̄) on [1, x], cross-fitted over
    `folds` folds (row i's prediction comes from a model that did not see row i); r̄ is the
    training fold's mean reward, so arms with little data shrink to it, not to 0.
    Returns (n, n_actions)."""
    n = x.shape[0]
    xb = np.hstack([np.ones((n, 1)), x])
    d = xb.shape[1]
    fold = np.random.default_rng(seed).integers(folds, size=n) if folds > 1 else np.zeros(n, int)
    q_hat = np.empty((n, n_actions))
    for f in range(max(folds, 1)):
        test = fold == f
        train = ~test if folds > 1 else test
        base = float(reward[train].mean()) if train.any() else 0.0
        for a in range(n_actions):
            rows = train & (action == a)
            xa, ra = xb[rows], reward[rows] - base
            theta = np.linalg.solve(l2 * np.eye(d) + xa.T @ xa, xa.T @ ra)
            q_hat[test, a] = base + xb[test] @ theta
    return q_hat
