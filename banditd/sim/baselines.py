"""Reference policies the simulator runs next to banditd's: random, best fixed arm (in
hindsight), context-free ε-greedy, always-cheapest, always-strongest.

Every agent has the same three calls as the simulator's Router wrapper (sim/replay.py):
`decide` picks an available arm, `learn` takes a reward when it arrives (delays included),
`tick` lets time pass (expiry).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


class Agent(Protocol):
    name: str

    def decide(self, now: float, x: Array, available: Mask) -> tuple[int, object]:
        """(index of the chosen arm, a ticket that `learn` gets back with the reward)."""
        ...

    def learn(self, ticket: object, reward: float, now: float) -> None: ...

    def tick(self, now: float) -> None: ...


def _pick(values: Array, available: Mask, rng: np.random.Generator | None = None) -> int:
    """argmax of values over available arms; ties broken at random if an rng is given."""
    masked = np.where(available, values, -np.inf)
    best = np.flatnonzero(masked == masked.max())
    if rng is None or best.shape[0] == 1:
        return int(best[0])
    return int(rng.choice(best))


class FixedPreference:
    """Always the available arm with the highest preference (cheapest: −cost, strongest:
    strength, best fixed arm: Σ_t μ_t(a) of the episode, known only in hindsight)."""

    def __init__(self, name: str, preference: Array) -> None:
        self.name = name
        self._preference = np.asarray(preference, dtype=np.float64)

    def decide(self, now: float, x: Array, available: Mask) -> tuple[int, object]:
        return _pick(self._preference, available), None

    def learn(self, ticket: object, reward: float, now: float) -> None:
        return None

    def tick(self, now: float) -> None:
        return None


class UniformRandom:
    name = "random"

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def decide(self, now: float, x: Array, available: Mask) -> tuple[int, object]:
        return int(self._rng.choice(np.flatnonzero(available))), None

    def learn(self, ticket: object, reward: float, now: float) -> None:
        return None

    def tick(self, now: float) -> None:
        return None


class EpsilonGreedy:
    """Context-free ε-greedy on per-arm sample means; ε_t = max(floor, ε₀·decayᵗ).

    Untried arms score +inf (each is tried once first). GreenServ's defaults: ε₀ = 1,
    decay = 0.98, floor = 0.01.
    """

    def __init__(
        self, n_arms: int, rng: np.random.Generator, epsilon: float = 0.1,
        decay: float = 1.0, floor: float = 0.0,
    ) -> None:  # fmt: skip
        if not (0 <= epsilon <= 1 and 0 < decay <= 1 and 0 <= floor <= 1):
            raise ValueError("need 0 <= epsilon, floor <= 1 and 0 < decay <= 1")
        self.name = "epsilon_greedy"
        self._rng = rng
        self._sum = np.zeros(n_arms)
        self._n = np.zeros(n_arms)
        self._epsilon = epsilon
        self._decay = decay
        self._floor = floor
        self._steps = 0

    def decide(self, now: float, x: Array, available: Mask) -> tuple[int, object]:
        eps = max(self._floor, self._epsilon * self._decay**self._steps)
        self._steps += 1
        if self._rng.random() < eps:
            arm = int(self._rng.choice(np.flatnonzero(available)))
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                means = np.where(self._n > 0, self._sum / np.maximum(self._n, 1), np.inf)
            arm = _pick(means, available, self._rng)
        return arm, arm

    def learn(self, ticket: object, reward: float, now: float) -> None:
        assert isinstance(ticket, int)
        self._sum[ticket] += reward
        self._n[ticket] += 1

    def tick(self, now: float) -> None:
        return None
