"""The synthetic stream every policy benchmark sees (../shared/research/perf.md §1).

Disjoint linear contextual bandit: x_t uniform on the unit sphere in R^d, θ_a ~ N(0, I_d) per
arm, so μ_{t,a} = θ_aᵀx_t ~ N(0, 1); the observed reward of arm a is μ_{t,a} + N(0, σ²), σ = 0.5.
Pseudo-regret of a run is Σ_t (max_a μ_{t,a} − μ_{t,a_t}). Everything is drawn once from one
seed, so every implementation sees identical arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Stream:
    """Precomputed contexts, means and noisy rewards of T rounds over K arms in R^d."""

    x: F64  # (T, d) contexts on the unit sphere
    mu: F64  # (T, K) expected rewards
    reward: F64  # (T, K) observed rewards (mu + noise)
    seed: int
    noise: float

    @property
    def rounds(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def arms(self) -> int:
        return int(self.mu.shape[1])

    def regret(self, t: int, arm: int) -> float:
        """Pseudo-regret of playing `arm` in round t."""
        row = self.mu[t]
        return float(row.max() - row[arm])


def make_stream(rounds: int, dim: int, arms: int, seed: int = 1, noise: float = 0.5) -> Stream:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rounds, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    theta = rng.standard_normal((arms, dim))
    mu = x @ theta.T
    reward = mu + noise * rng.standard_normal((rounds, arms))
    return Stream(x, mu, reward, seed, noise)
