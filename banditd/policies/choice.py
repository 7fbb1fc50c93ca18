"""Turning per-arm scores into a choice and its propensity. PURE."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from banditd.policies.linear import Vector

# Scores within this relative distance of the best count as tied.
TIE_RTOL = 1e-12


@dataclass(frozen=True, slots=True)
class Choice:
    """Which candidate a policy picked, and why.

    Arrays are indexed like the candidates. score = estimate + bonus − penalty; propensity is
    the probability the policy gives each candidate for this context (it sums to 1).
    """

    index: int
    estimate: Vector
    bonus: Vector
    penalty: Vector
    score: Vector
    propensity: Vector
    # (estimate, bonus, score) as Python floats, when the policy computed them that way: the
    # response builder then skips three conversions. None: use the arrays.
    floats: tuple[list[float], list[float], list[float]] | None = None


def greedy_propensities(score: Vector, epsilon: float) -> Vector:
    """Propensities of "argmax, ties broken uniformly, with probability ε a uniform arm".

    p_a = (1−ε)·1[a tied for best]/#tied + ε/K. With ε = 0 a unique best arm has p = 1.
    """
    best = float(score.max())
    tied = score >= best - TIE_RTOL * max(1.0, abs(best))
    k = score.shape[0]
    probabilities: Vector = (1.0 - epsilon) * tied / tied.sum() + epsilon / k
    return probabilities


def greedy(score: Vector, epsilon: float, rng: np.random.Generator) -> tuple[int, Vector]:
    """Choose by `greedy_propensities`; a unique best arm with ε = 0 needs no random draw."""
    return greedy_values(score.tolist(), score, epsilon, rng)


def greedy_values(
    values: list[float], score: Vector | None, epsilon: float, rng: np.random.Generator
) -> tuple[int, Vector]:
    """`greedy` on the scores as Python floats (`score`: the same as an array, if at hand)."""
    top = max(values)
    if epsilon == 0.0:
        floor = top - TIE_RTOL * max(1.0, abs(top))
        if len([v for v in values if v >= floor]) == 1:
            best = values.index(top)
            return best, one_hot(len(values), best)
    propensity = greedy_propensities(np.array(values) if score is None else score, epsilon)
    return draw(propensity, rng), propensity


@functools.lru_cache(maxsize=256)
def zeros(k: int) -> Vector:
    """A read-only vector of k zeros (the penalty of candidates nobody prices), shared."""
    out = np.zeros(k)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4096)
def one_hot(k: int, index: int) -> Vector:
    """The read-only propensity vector of a sure choice (shared: built once per (k, index))."""
    out = np.zeros(k)
    out[index] = 1.0
    out.setflags(write=False)
    return out


def draw(probabilities: Vector, rng: np.random.Generator) -> int:
    """Sample an index with the given probabilities (one uniform draw)."""
    cdf = np.cumsum(probabilities)
    index = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(index, int(probabilities.shape[0]) - 1)
