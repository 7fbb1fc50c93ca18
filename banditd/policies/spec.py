"""PolicyConfig: the core's frozen view of one policy, and its reward/price rules. PURE."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from banditd.features.schema import NumericFeature


@dataclass(frozen=True, slots=True)
class RewardFunction:
    """reward = Σ weights[m]·metrics[m], then clipped to [clip_min, clip_max] if set."""

    weights: Mapping[str, float] = field(default_factory=lambda: {"quality": 1.0})
    clip_min: float | None = None
    clip_max: float | None = None

    def combine(self, metrics: Mapping[str, float]) -> float:
        """Combine named metrics; raises ValueError naming what is missing or unknown."""
        unknown = sorted(set(metrics) - set(self.weights))
        if unknown:
            raise ValueError(
                f"unknown metrics {unknown}; this policy's reward uses {sorted(self.weights)}"
            )
        missing = sorted(set(self.weights) - set(metrics))
        if missing:
            raise ValueError(f"missing metrics {missing} needed by this policy's reward")
        reward = math.fsum(w * metrics[m] for m, w in self.weights.items())
        if self.clip_min is not None:
            reward = max(reward, self.clip_min)
        if self.clip_max is not None:
            reward = min(reward, self.clip_max)
        return reward


@dataclass(frozen=True, slots=True)
class PriceWeights:
    """Selection-time penalty = cost·candidate.cost + latency_ms·candidate.expected_latency_ms."""

    cost: float = 0.0
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    name: str
    algorithm: Literal["linucb", "thompson"] = "linucb"
    alpha: float = 1.0
    v: float = 0.5
    l2: float = 1.0
    epsilon: float = 0.0
    model: Literal["disjoint", "shared"] = "disjoint"
    arms: tuple[str, ...] = ()
    allow_new_arms: bool = False
    arm_features: int = 0
    max_candidates: int = 64
    numeric: tuple[NumericFeature, ...] = ()
    allow_unknown_features: bool = False
    reward: RewardFunction = field(default_factory=RewardFunction)
    price: PriceWeights = field(default_factory=PriceWeights)
    reward_wait_s: float = 600.0
    default_reward: float | None = 0.0  # None: drop decisions whose reward never came
    decay_factor: float = 1.0  # γ per decay interval
    decay_interval_s: float = 3600.0
