"""Disjoint LinUCB (Li et al., 2010) over ridge statistics. PURE.

Score of candidate a with context vector x_a:

    s_a = θ_aᵀx_a + α·sqrt(x_aᵀA_a⁻¹x_a) − penalty_a

The choice is the argmax. Propensity: UCB is deterministic, so the chosen arm has propensity 1
unless several arms tie (then each tied arm has 1/#tied, broken uniformly at random), mixed
with an optional ε-uniform floor: p_a = (1−ε)·1[a tied]/#tied + ε/K. Off-policy evaluation
needs ε > 0 to see arms the greedy rule never picks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from banditd.policies.choice import Choice, greedy, greedy_values
from banditd.policies.linear import ArmState, Stack, Vector, stack


@dataclass(frozen=True, slots=True)
class LinUCBParams:
    alpha: float = 1.0  # exploration width α ≥ 0
    l2: float = 1.0  # ridge strength λ > 0
    epsilon: float = 0.0  # uniform exploration floor ε in [0, 1]

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.l2 <= 0 or not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"need alpha >= 0, l2 > 0, 0 <= epsilon <= 1, got {self}")


def scores(
    states: Sequence[ArmState],
    xs: Sequence[Vector],
    alpha: float,
    stacked: Stack | None = None,
) -> tuple[Vector, Vector]:
    """Per-candidate (θ·x, α·sqrt(xᵀA⁻¹x)), vectorised over candidates.

    Disjoint arms share one x (`xs` holds the same object K times): one batched matvec over
    the stacked A⁻¹ (`stacked`, or stacked here). A shared model has one state and K vectors.
    """
    first = states[0]
    if all(s is first for s in states):  # shared model (or K = 1)
        x_mat = np.stack(xs)
        a_inv_x = x_mat @ first.a_inv
        var = np.einsum("ij,ij->i", a_inv_x, x_mat)
        estimate = x_mat @ first.theta
    else:
        block = stacked if stacked is not None else stack(states)
        x0 = xs[0]
        if all(x is x0 for x in xs):  # disjoint arms, one context vector
            return stacked_scores(block, x0, alpha)
        else:
            x_mat = np.stack(xs)
            var = np.einsum("kij,ki,kj->k", block.a_inv, x_mat, x_mat)
            estimate = np.einsum("ki,ki->k", block.theta, x_mat)
    bonus = alpha * np.sqrt(np.maximum(var, 0.0))
    return np.asarray(estimate, dtype=np.float64), np.asarray(bonus, dtype=np.float64)


def stacked_products(block: Stack, x: Vector) -> tuple[Vector, Vector]:
    """(θ_k·x, xᵀA_k⁻¹x) for every stacked arm k, for one context x shared by all.

    One batched product y = rows @ x gives A_k⁻¹x in y[k, :d] and θ_k·x in y[k, d].
    """
    y = block.rows @ x
    return y[:, -1], y[:, :-1] @ x


def stacked_scores(block: Stack, x: Vector, alpha: float) -> tuple[Vector, Vector]:
    """`scores` for disjoint arms sharing one context x: (θ_k·x, α·sqrt(xᵀA_k⁻¹x)) for every k."""
    estimate, var = stacked_products(block, x)
    return estimate, alpha * np.sqrt(np.maximum(var, 0.0))


def choose_stacked(
    block: Stack, x: Vector, penalty: Vector, params: LinUCBParams, rng: np.random.Generator
) -> Choice:
    """`choose` for disjoint arms sharing one context vector, their states already stacked.

    Two numpy products give θ_k·x and xᵀA_k⁻¹x; the K-sized rest (bonus, score, argmax) runs on
    Python floats, with the same IEEE arithmetic as numpy's elementwise ops (so the same
    choices): for the few dozen candidates of a Route, a numpy call costs more than the
    arithmetic (about 1 µs each in a loop, 3-5 µs with the cold caches a server sees between
    requests; docs/bench.md).
    """
    estimate, var = stacked_products(block, x)
    alpha = params.alpha
    bonus = [alpha * math.sqrt(v) if v > 0.0 else 0.0 for v in var.tolist()]
    est = estimate.tolist()
    score = [e + b - p for e, b, p in zip(est, bonus, penalty.tolist(), strict=True)]
    index, propensity = greedy_values(score, None, params.epsilon, rng)
    return Choice(
        index, estimate, np.array(bonus), penalty, np.array(score), propensity,
        (est, bonus, score),
    )  # fmt: skip


def choose(
    states: Sequence[ArmState],
    xs: Sequence[Vector],
    penalty: Vector,
    params: LinUCBParams,
    rng: np.random.Generator,
    stacked: Stack | None = None,
) -> Choice:
    """Pick the candidate with the highest upper confidence bound minus its penalty."""
    estimate, bonus = scores(states, xs, params.alpha, stacked)
    score = estimate + bonus - penalty
    index, propensity = greedy(score, params.epsilon, rng)
    return Choice(index, estimate, bonus, penalty, score, propensity)
