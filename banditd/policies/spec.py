"""PolicyConfig: the core's frozen view of one policy, and its reward/price rules. PURE."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from banditd.errors import shown
from banditd.features.schema import DEFAULT_MAX_ABS_Z, NumericFeature

DEFAULT_REWARD_BOUND = 1000.0  # rewards outside ±this are refused unless the policy declares
DEFAULT_METRIC_BOUND = 1e9  # metrics outside ±this are refused unless declared


@dataclass(frozen=True, slots=True)
class RewardFunction:
    """reward = Σ weights[m]·metrics[m], then clipped to [clip_min, clip_max] if set.

    Bounds: every metric must lie in its declared `metric_bounds` (default ±1e9) and the reward
    in [lo, hi] (default ±1000); out of range the feedback is refused, or, with `clip`, the
    reward is clipped to [lo, hi]. So no single feedback can put a huge value into a model.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"quality": 1.0})
    clip_min: float | None = None
    clip_max: float | None = None
    lo: float = -DEFAULT_REWARD_BOUND
    hi: float = DEFAULT_REWARD_BOUND
    clip: bool = False
    metric_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo <= self.hi):
            raise ValueError(f"reward bounds must be finite, min <= max; got {self.lo, self.hi}")

    def value(self, reward: float | None, metrics: Mapping[str, float]) -> float:
        """The reward to learn from a feedback's reward or metrics; ValueError saying why not."""
        for name, metric in metrics.items():
            lo, hi = self.metric_bounds.get(name, (-DEFAULT_METRIC_BOUND, DEFAULT_METRIC_BOUND))
            if not lo <= metric <= hi:  # (False for NaN)
                raise ValueError(
                    f"metric {shown(name)} is {metric:g}, outside its bounds [{lo:g}, {hi:g}]"
                    " (reward.metric_bounds)"
                )
        if reward is None:
            if not metrics:
                raise ValueError("feedback needs a reward or metrics")
            reward = self.combine(metrics)
        elif not math.isfinite(reward):
            raise ValueError(f"reward is {reward}; rewards must be finite")
        if not self.lo <= reward <= self.hi:
            if not self.clip or not math.isfinite(reward):
                raise ValueError(
                    f"reward {reward:g} is outside the policy's reward range [{self.lo:g},"
                    f" {self.hi:g}] (reward.min/reward.max); send a reward in range, declare the"
                    " policy's true range, or set reward.out_of_range = 'clip'"
                )
            reward = min(max(reward, self.lo), self.hi)
        return reward

    def combine(self, metrics: Mapping[str, float]) -> float:
        """Combine named metrics; raises ValueError naming what is missing or unknown."""
        unknown = sorted(set(metrics) - set(self.weights))
        if unknown:
            raise ValueError(
                f"unknown metrics {shown(unknown)}; this policy's reward uses"
                f" {sorted(self.weights)}"
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


DEFAULT_MAX_COST = 1e6
DEFAULT_MAX_LATENCY_MS = 3_600_000.0  # one hour


@dataclass(frozen=True, slots=True)
class PriceWeights:
    """Selection-time penalty = cost·candidate.cost + latency_ms·candidate.expected_latency_ms.

    A candidate's |cost| must be at most max_cost and its expected latency within
    [0, max_latency_ms] (out of range: clipped or refused, by the policy's out_of_range rule).
    """

    cost: float = 0.0
    latency_ms: float = 0.0
    max_cost: float = DEFAULT_MAX_COST
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS


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
    # Route inputs out of range: clipped to the nearest bound (True) or refused (False).
    clip_out_of_range: bool = True
    max_abs_z: float = DEFAULT_MAX_ABS_Z  # standardised numeric features: within ±this
    max_abs_arm_feature: float = 1000.0  # shared model's per-arm features: within ±this
    max_segments: int = 1000  # segments with state (0 = no limit)
    evict_lru: bool = False  # at max_segments: forget the least recently used, else refuse
    segment_ttl_s: float = 30 * 86_400.0  # forget a segment unused this long (0 = never)
    max_arms: int = 1024  # arms a policy may route to (allow_new_arms adds up to this many)
