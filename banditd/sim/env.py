"""Synthetic and full-information environments for the simulator.

An environment draws an `Episode` per seed: for every step t a context (numeric features, no
bias: the policy's extractor adds it), the expected reward μ_t(a) of every arm and the reward
r_t(a) every arm would have paid. Knowing every arm's reward (full information) is what makes
true regret computable; the policy only ever sees the reward of the arm it picked.

Kinds: `linear` (μ = θ_aᵀ[1, x]), `nonlinear` (Bernoulli rewards, logistic with a quadratic
term: a linear policy is misspecified), `drift` (linear with θ rotating over the horizon,
abrupt change points and arm failure windows) and `table` (rows of a full-information dataset
sampled per step; `catalog` builds one from the tryaii model catalog, see sim/catalog.py).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Episode:
    """One seed's draw: x (T, m), mean and reward (T, K), available (T, K)."""

    x: Array
    mean: Array
    reward: Array
    available: Mask

    @property
    def horizon(self) -> int:
        return int(self.x.shape[0])

    def best_mean(self) -> Array:
        """max over available arms of μ_t(a), per step (what the oracle earns)."""
        best: Array = np.where(self.available, self.mean, -np.inf).max(axis=1)
        return best


class Environment(Protocol):
    @property
    def arms(self) -> tuple[str, ...]: ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def costs(self) -> Array:
        """Price per call of each arm (Candidate.cost; what `always-cheapest` minimises)."""
        ...

    @property
    def strengths(self) -> Array:
        """A-priori quality of each arm (what `always-strongest` maximises)."""
        ...

    def episode(self, horizon: int, rng: np.random.Generator) -> Episode: ...


def _arm_names(k: int) -> tuple[str, ...]:
    return tuple(f"arm{i}" for i in range(k))


def _sphere(rng: np.random.Generator, n: int, m: int) -> Array:
    z = rng.standard_normal((n, m))
    return np.asarray(z / np.linalg.norm(z, axis=1, keepdims=True), dtype=np.float64)


class _SyntheticArms:
    """Arms arm0..arm{K-1} priced evenly over [0, 1], dearer ones a-priori stronger (as with
    real models), and context features f0..f{d-1}: shared by the synthetic environments."""

    __slots__ = ()
    n_arms: int
    dim: int

    @property
    def arms(self) -> tuple[str, ...]:
        return _arm_names(self.n_arms)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"f{i}" for i in range(self.dim))

    @property
    def costs(self) -> Array:
        return np.linspace(0.0, 1.0, self.n_arms)

    @property
    def strengths(self) -> Array:
        return np.arange(self.n_arms, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class LinearEnv(_SyntheticArms):
    """μ_t(a) = θ_aᵀ[1, x_t] − price·cost_a, x_t uniform on the unit sphere, r = μ + N(0, σ²).

    θ_a ~ N(0, I/(m+1)) is drawn per seed. cost_a is spread evenly over [0, 1] and the arms'
    bias terms are sorted so dearer arms are a-priori stronger (as with real models).
    """

    n_arms: int = 5
    dim: int = 5
    noise: float = 0.1
    price: float = 0.0

    def __post_init__(self) -> None:
        if self.n_arms < 2 or self.dim < 1 or self.noise < 0:
            raise ValueError(f"need >= 2 arms, dim >= 1, noise >= 0; got {self}")

    def thetas(self, rng: np.random.Generator) -> Array:
        """(K, m+1) arm parameters; column 0 (bias) sorted ascending with cost."""
        theta: Array = rng.standard_normal((self.n_arms, self.dim + 1)) / np.sqrt(self.dim + 1)
        theta[:, 0] = np.sort(theta[:, 0])
        return theta

    def episode(self, horizon: int, rng: np.random.Generator) -> Episode:
        theta = self.thetas(rng)
        x = _sphere(rng, horizon, self.dim)
        mean = _with_bias(x) @ theta.T - self.price * self.costs
        reward = mean + self.noise * rng.standard_normal(mean.shape)
        return Episode(x, mean, reward, np.ones(mean.shape, dtype=bool))


def _with_bias(x: Array) -> Array:
    out: Array = np.hstack([np.ones((x.shape[0], 1)), x])
    return out


@dataclass(frozen=True, slots=True)
class NonLinearEnv(_SyntheticArms):
    """Bernoulli rewards with p_t(a) = sigmoid(2·θ_aᵀ[1, x] + 3·(u_aᵀx)² − 1): misspecified.

    A linear policy still learns the arms' average tilt but cannot fit the quadratic bump, so
    its regret keeps a linear component; this shows what misspecification costs.
    """

    n_arms: int = 5
    dim: int = 5

    def episode(self, horizon: int, rng: np.random.Generator) -> Episode:
        theta = rng.standard_normal((self.n_arms, self.dim + 1)) / np.sqrt(self.dim + 1)
        theta[:, 0] = np.sort(theta[:, 0])
        u = _sphere(rng, self.n_arms, self.dim)
        x = _sphere(rng, horizon, self.dim)
        logit = 2.0 * (_with_bias(x) @ theta.T) + 3.0 * (x @ u.T) ** 2 - 1.0
        mean = 1.0 / (1.0 + np.exp(-logit))
        reward = (rng.random(mean.shape) < mean).astype(np.float64)
        return Episode(x, mean, reward, np.ones(mean.shape, dtype=bool))


@dataclass(frozen=True, slots=True)
class Failure:
    """Arm `arm` fails on steps [start·T, end·T): it pays `reward` (or is withdrawn)."""

    arm: int
    start: float
    end: float
    reward: float = 0.0
    withdraw: bool = False  # True: not offered as a candidate at all (taken offline)


@dataclass(frozen=True, slots=True)
class DriftEnv:
    """Linear, but non-stationary: θ_a(t) rotates from θ_a to θ'_a over the horizon
    (θ_a cos φ_t + θ'_a sin φ_t, φ_t = drift·(π/2)·t/T), every arm is redrawn at each change
    point (fractions of T), and failure windows pin an arm's reward (timeouts, outages)."""

    base: LinearEnv = field(default_factory=LinearEnv)
    drift: float = 1.0
    change_points: tuple[float, ...] = ()
    failures: tuple[Failure, ...] = ()

    @property
    def arms(self) -> tuple[str, ...]:
        return self.base.arms

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.base.feature_names

    @property
    def costs(self) -> Array:
        return self.base.costs

    @property
    def strengths(self) -> Array:
        return self.base.strengths

    def episode(self, horizon: int, rng: np.random.Generator) -> Episode:
        base = self.base
        start, end = base.thetas(rng), base.thetas(rng)
        x = _sphere(rng, horizon, base.dim)
        xb = _with_bias(x)
        phi = self.drift * (np.pi / 2) * np.arange(horizon) / max(horizon, 1)
        mean = np.cos(phi)[:, None] * (xb @ start.T) + np.sin(phi)[:, None] * (xb @ end.T)
        for cp in sorted(self.change_points):
            t0 = int(cp * horizon)
            jump_a, jump_b = base.thetas(rng), base.thetas(rng)
            tail = np.cos(phi[t0:])[:, None] * (xb[t0:] @ jump_a.T)
            mean[t0:] = tail + np.sin(phi[t0:])[:, None] * (xb[t0:] @ jump_b.T)
        mean -= base.price * base.costs
        reward = mean + base.noise * rng.standard_normal(mean.shape)
        available = np.ones(mean.shape, dtype=bool)
        for f in self.failures:
            t0, t1 = int(f.start * horizon), int(f.end * horizon)
            if f.withdraw:
                available[t0:t1, f.arm] = False
            mean[t0:t1, f.arm] = f.reward
            reward[t0:t1, f.arm] = f.reward
        return Episode(x, mean, reward, available)


@dataclass(frozen=True, slots=True)
class TableEnv:
    """A full-information dataset: row i has features x_i and the reward of every arm.

    Each step samples a row uniformly (with replacement); μ_t(a) = rewards[i, a] − price·cost_a
    and the arm pays μ plus N(0, noise²), or, with `bernoulli`, a Bernoulli(rewards[i, a])
    draw minus the price (rewards are then success probabilities in [0, 1]).
    """

    arm_names: tuple[str, ...]
    names: tuple[str, ...]
    features: Array  # (N, m)
    rewards: Array  # (N, K)
    arm_costs: Array  # (K,)
    arm_strengths: Array  # (K,)
    price: float = 0.0
    noise: float = 0.0
    bernoulli: bool = False

    def __post_init__(self) -> None:
        n, k = self.rewards.shape
        if self.features.shape[0] != n or k != len(self.arm_names):
            raise ValueError("features, rewards and arm names disagree in shape")
        if self.bernoulli and not (np.all(self.rewards >= 0) and np.all(self.rewards <= 1)):
            raise ValueError("bernoulli rewards need success probabilities in [0, 1]")

    @property
    def arms(self) -> tuple[str, ...]:
        return self.arm_names

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.names

    @property
    def costs(self) -> Array:
        return self.arm_costs

    @property
    def strengths(self) -> Array:
        return self.arm_strengths

    def episode(self, horizon: int, rng: np.random.Generator) -> Episode:
        rows = rng.integers(self.rewards.shape[0], size=horizon)
        quality = self.rewards[rows]
        penalty = self.price * self.arm_costs
        mean = quality - penalty
        if self.bernoulli:
            reward = (rng.random(quality.shape) < quality).astype(np.float64) - penalty
        else:
            reward = mean + self.noise * rng.standard_normal(mean.shape)
        return Episode(self.features[rows], mean, reward, np.ones(mean.shape, dtype=bool))


def load_table(path: Path, price: float = 0.0, noise: float = 0.0) -> TableEnv:
    """Read a full-information CSV: columns `f:<feature>` and `r:<arm>` (and optional
    `c:<arm>` cost, constant per arm: the first row's value is used)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        feats = [h for h in header if h.startswith("f:")]
        arms = [h for h in header if h.startswith("r:")]
        if not arms:
            raise ValueError(f"{path}: no `r:<arm>` columns")
        rows = list(reader)
    x = np.array([[float(r[h]) for h in feats] for r in rows], dtype=np.float64).reshape(
        len(rows), len(feats)
    )
    y = np.array([[float(r[h]) for h in arms] for r in rows], dtype=np.float64)
    names = tuple(h[2:] for h in arms)
    costs = np.array([float(rows[0].get(f"c:{a}", 0.0) or 0.0) for a in names])
    return TableEnv(names, tuple(h[2:] for h in feats), x, y, costs, y.mean(axis=0),
                    price=price, noise=noise)  # fmt: skip


def arm_index(arms: Sequence[str], name: str) -> int:
    try:
        return list(arms).index(name)
    except ValueError:
        raise ValueError(f"unknown arm {name!r}; arms are {list(arms)}") from None
