"""Reward delay distributions: when (and whether) a decision's reward reaches the policy.

`sample` draws one delay per decision in seconds; `inf` means the reward never comes (dropped),
so the daemon's expiry rule (default reward or drop after reward_wait_s) settles it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

DelayKind = Literal["none", "fixed", "exponential", "lognormal", "uniform", "episode"]


@dataclass(frozen=True, slots=True)
class DelayModel:
    """kind: none (immediate) | fixed (mean_s) | exponential (mean mean_s) | lognormal
    (median mean_s, log-sd sigma) | uniform [0, 2·mean_s] | episode (every reward of a block of
    `episode_len` decisions arrives together when the block ends, as with a multi-step task's
    end-of-episode score). drop: probability a reward is never sent."""

    kind: DelayKind = "none"
    mean_s: float = 0.0
    sigma: float = 1.0
    drop: float = 0.0
    episode_len: int = 10

    def __post_init__(self) -> None:
        if self.mean_s < 0 or self.sigma < 0 or not 0.0 <= self.drop <= 1.0:
            raise ValueError(f"need mean_s >= 0, sigma >= 0, 0 <= drop <= 1; got {self}")
        if self.episode_len < 1:
            raise ValueError("episode_len must be >= 1")

    def sample(
        self, n: int, rng: np.random.Generator, interval_s: float
    ) -> npt.NDArray[np.float64]:
        """Delay of each of n decisions made interval_s apart (inf = never delivered)."""
        delay: npt.NDArray[np.float64]
        match self.kind:
            case "none":
                delay = np.zeros(n)
            case "fixed":
                delay = np.full(n, self.mean_s)
            case "exponential":
                delay = rng.exponential(self.mean_s, n) if self.mean_s > 0 else np.zeros(n)
            case "lognormal":
                delay = self.mean_s * np.exp(self.sigma * rng.standard_normal(n))
            case "uniform":
                delay = rng.uniform(0.0, 2.0 * self.mean_s, n)
            case "episode":
                step = np.arange(n)
                end = (step // self.episode_len + 1) * self.episode_len - 1
                delay = ((np.minimum(end, n - 1) - step) * interval_s + self.mean_s).astype(
                    np.float64
                )
            case _:
                raise ValueError(f"unknown delay kind {self.kind!r}")
        dropped = rng.random(n) < self.drop if self.drop > 0 else np.zeros(n, dtype=bool)
        return np.asarray(np.where(dropped, np.inf, delay), dtype=np.float64)
