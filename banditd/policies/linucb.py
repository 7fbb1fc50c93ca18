"""Disjoint LinUCB (Li et al., 2010) over ridge statistics. PURE.

Score of candidate a with context vector x_a:

    s_a = θ_aᵀx_a + α·sqrt(x_aᵀA_a⁻¹x_a) − penalty_a

The choice is the argmax. Propensity: UCB is deterministic, so the chosen arm has propensity 1
unless several arms tie (then each tied arm has 1/#tied, broken uniformly at random), mixed
with an optional ε-uniform floor: p_a = (1−ε)·1[a tied]/#tied + ε/K. Off-policy evaluation
needs ε > 0 to see arms the greedy rule never picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from banditd.policies.choice import Choice, draw, greedy_propensities
from banditd.policies.linear import ArmState, Vector


@dataclass(frozen=True, slots=True)
class LinUCBParams:
    alpha: float = 1.0  # exploration width α ≥ 0
    l2: float = 1.0  # ridge strength λ > 0
    epsilon: float = 0.0  # uniform exploration floor ε in [0, 1]

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.l2 <= 0 or not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"need alpha >= 0, l2 > 0, 0 <= epsilon <= 1, got {self}")


def scores(states: Sequence[ArmState], xs: Sequence[Vector], alpha: float) -> tuple[Vector, Vector]:
    """Per-candidate (θ·x, α·sqrt(xᵀA⁻¹x))."""
    k = len(states)
    estimate = np.empty(k)
    bonus = np.empty(k)
    for i, (state, x) in enumerate(zip(states, xs, strict=True)):
        a_inv_x = state.a_inv @ x
        estimate[i] = state.theta @ x
        bonus[i] = alpha * np.sqrt(max(float(x @ a_inv_x), 0.0))
    return estimate, bonus


def choose(
    states: Sequence[ArmState],
    xs: Sequence[Vector],
    penalty: Vector,
    params: LinUCBParams,
    rng: np.random.Generator,
) -> Choice:
    """Pick the candidate with the highest upper confidence bound minus its penalty."""
    estimate, bonus = scores(states, xs, params.alpha)
    score = estimate + bonus - penalty
    propensity = greedy_propensities(score, params.epsilon)
    return Choice(draw(propensity, rng), estimate, bonus, penalty, score, propensity)
