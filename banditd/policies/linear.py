"""Ridge-regression sufficient statistics shared by LinUCB and linear Thompson sampling.

PURE: numpy only. One arm (or one shared model) is summarised by

    S = Σ w_i x_i x_iᵀ          (the data part of the Gram matrix)
    b = Σ w_i r_i x_i
    A = λI + S                  (ridge-regularised Gram matrix)
    θ = A⁻¹ b                   (ridge estimate)

S, b and n are additive, so updates commute and can be applied by any replica in any order.
A⁻¹ and θ are derived. `update` keeps them current with a Sherman–Morrison rank-one step,
O(d²); only `decay` (once per decay epoch) and `from_sums` (a state fetched from a store)
pay an O(d³) factorisation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]  # shape (d,)
Matrix = npt.NDArray[np.float64]  # shape (d, d)

# Bytes of Python objects around one ArmState's four arrays (array headers, the dataclass) and
# its entry in a store's dict: measured by tests/unit/test_sizing.py.
OVERHEAD = 650

# Re-derive A⁻¹ from S every this many rank-one steps, so rounding error cannot accumulate.
REFRESH_EVERY = 4096
# Beyond this xᵀA⁻¹x, Sherman–Morrison's A⁻¹ − (A⁻¹x)(A⁻¹x)ᵀ/(1 + xᵀA⁻¹x) loses more than 8 of
# A⁻¹'s 16 digits to cancellation (and can reach a zero diagonal): rebuild from S instead.
# Bounded features keep xᵀA⁻¹x <= ‖x‖²/λ, far below it.
MAX_RANK_ONE_QUAD = 1e8


class UnsafeUpdateError(ValueError):
    """An update or stored sums would leave S, b or A⁻¹ non-finite, or A not positive definite.

    The state it was computed from is unchanged (states are immutable); callers refuse it.
    """


@dataclass(frozen=True, slots=True)
class ArmState:
    """Sufficient statistics of one linear model plus its derived inverse.

    s: S = Σ w x xᵀ; a_inv: (λI + S)⁻¹; b: Σ w r x; theta: A⁻¹ b; n: rewards learned from;
    l2: the ridge strength λ the inverse was built with; steps: rank-one steps since a refresh.
    """

    s: Matrix
    a_inv: Matrix
    b: Vector
    theta: Vector
    n: int
    l2: float
    steps: int = 0

    @property
    def dim(self) -> int:
        return int(self.b.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory it holds: its four arrays' data plus the objects around them (OVERHEAD,
        measured with tracemalloc by tests/unit/test_sizing.py)."""
        return self.s.nbytes + self.a_inv.nbytes + self.b.nbytes + self.theta.nbytes + OVERHEAD


def prior(dim: int, l2: float) -> ArmState:
    """The state before any reward: S = 0, A = λI, θ = 0."""
    if dim <= 0 or l2 <= 0:
        raise ValueError(f"need dim > 0 and l2 > 0, got dim={dim} l2={l2}")
    zeros = np.zeros(dim)
    return ArmState(np.zeros((dim, dim)), np.eye(dim) / l2, zeros, zeros, 0, l2)


@functools.lru_cache(maxsize=256)
def shared_prior(dim: int, l2: float) -> ArmState:
    """`prior(dim, l2)` built once and made read-only: stores hand it to every untrained arm."""
    state = prior(dim, l2)
    for array in (state.s, state.a_inv, state.b, state.theta):
        array.setflags(write=False)
    return state


def from_sums(s: Matrix, b: Vector, n: int, l2: float) -> ArmState:
    """Rebuild the derived inverse from stored sums: A⁻¹ = (λI + S)⁻¹ (O(d³), via Cholesky).

    UnsafeUpdateError if the sums are not finite or λI + S is not positive definite.
    """
    dim = b.shape[0]
    if not math.isfinite(float(s.sum()) + float(b.sum())):
        raise UnsafeUpdateError("S or b is not finite")
    a = s + l2 * np.eye(dim)
    a = 0.5 * (a + a.T)
    try:
        chol = np.linalg.cholesky(a)
        chol_inv = np.linalg.inv(chol)
    except np.linalg.LinAlgError as exc:  # (NaN or inf in S end here too)
        raise UnsafeUpdateError(f"λI + S is not positive definite: {exc}") from None
    a_inv = chol_inv.T @ chol_inv
    theta = a_inv @ b
    if not math.isfinite(float(a_inv.sum()) + float(theta.sum())) or a_inv.diagonal().min() <= 0:
        raise UnsafeUpdateError("the sums give a non-finite or singular A⁻¹")
    return ArmState(s, a_inv, b, theta, n, l2)


def update(state: ArmState, x: Vector, reward: float, weight: float = 1.0) -> ArmState:
    """Add one weighted observation: S += w x xᵀ, b += w r x, A⁻¹ by Sherman–Morrison.

    (A + w x xᵀ)⁻¹ = A⁻¹ − w (A⁻¹x)(A⁻¹x)ᵀ / (1 + w xᵀA⁻¹x), O(d²).

    UnsafeUpdateError, leaving `state` as it was, if the result would not be finite. If
    rounding made A⁻¹ lose positive definiteness (xᵀA⁻¹x < 0), A⁻¹ is re-derived from S.
    """
    if weight <= 0:
        raise ValueError(f"weight must be > 0, got {weight}")
    wx = x * weight if weight != 1.0 else x
    s = state.s + x[:, None] * wx
    b = state.b + reward * wx
    steps = state.steps + 1
    if steps >= REFRESH_EVERY:
        return from_sums(s, b, state.n + 1, state.l2)
    a_inv_x = state.a_inv @ x
    quad = float(x @ a_inv_x)
    if not 0.0 <= quad <= MAX_RANK_ONE_QUAD:
        # xᵀA⁻¹x < 0: rounding drifted A⁻¹ off positive definite (or it is NaN); huge: the
        # subtraction would cancel A⁻¹'s diagonal to nothing. Either way, rebuild from S.
        return from_sums(s, b, state.n + 1, state.l2)
    shrink = weight / (1.0 + weight * quad)
    a_inv = state.a_inv - a_inv_x[:, None] * (a_inv_x * shrink)
    theta = a_inv @ b
    # Finite, proved with two numpy calls (each costs ~1 µs whatever d; this runs per reward):
    # S is positive semidefinite, so |S_ij| <= max(S_ii) <= tr S, and a finite trace makes
    # every entry finite; bᵀθ = bᵀA⁻¹b is NaN or infinite if b, θ or A⁻¹ has a NaN or an
    # infinity (A⁻¹ is positive definite: no column of it can hide one). Overflows count too.
    if not math.isfinite(float(s.trace()) + float(b @ theta)):
        raise UnsafeUpdateError("the update would make S, b or A⁻¹ non-finite")
    return ArmState(s, a_inv, b, theta, state.n + 1, state.l2, steps)


def decay(state: ArmState, factor: float) -> ArmState:
    """Stabilised forgetting: S ← γS, b ← γb, so A = λI + γS never drops below λI.

    Plain forgetting of A (A ← γA) lets unobserved directions shrink to zero and A⁻¹ blow up;
    decaying only the data part keeps the prior, so the state stays well conditioned.
    """
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"decay factor must be in (0, 1], got {factor}")
    if factor == 1.0:
        return state
    return from_sums(factor * state.s, factor * state.b, state.n, state.l2)


@dataclass(frozen=True, slots=True)
class Stack:
    """K arm states stacked for vectorised scoring.

    rows (K, d+1, d): arm k's A⁻¹ in rows[k, :d] and its θ in rows[k, d], so one batched
    matrix-vector product gives every arm's A⁻¹x and θ·x together (`linucb.stacked_scores`).
    """

    rows: npt.NDArray[np.float64]

    @property
    def a_inv(self) -> npt.NDArray[np.float64]:
        """(K, d, d), a view."""
        return self.rows[:, :-1]

    @property
    def theta(self) -> npt.NDArray[np.float64]:
        """(K, d), a view."""
        return self.rows[:, -1]


def stack(states: Sequence[ArmState]) -> Stack:
    dim = states[0].dim
    rows = np.empty((len(states), dim + 1, dim))
    for i, state in enumerate(states):
        rows[i, :dim] = state.a_inv
        rows[i, dim] = state.theta
    return Stack(rows)


def restack(block: Stack, previous: Sequence[ArmState], states: Sequence[ArmState]) -> bool:
    """Turn `block` (built from `previous`) into `stack(states)` in place, copying only the rows
    of states that changed (by identity: states are immutable). True if any row changed."""
    rows = block.rows
    changed = False
    for i, (was, now) in enumerate(zip(previous, states, strict=True)):
        if was is not now:
            rows[i, :-1] = now.a_inv
            rows[i, -1] = now.theta
            changed = True
    return changed


def batch_solve(xs: npt.NDArray[np.float64], rs: Vector, l2: float) -> tuple[Matrix, Vector]:
    """The direct ridge solution for a whole history: (A⁻¹, θ) with A = λI + XᵀX, θ = A⁻¹Xᵀr.

    Reference for tests and the simulator; O(nd² + d³).
    """
    dim = xs.shape[1]
    a = l2 * np.eye(dim) + xs.T @ xs
    a_inv = np.asarray(np.linalg.inv(a), dtype=np.float64)
    theta = np.asarray(a_inv @ (xs.T @ rs), dtype=np.float64)
    return a_inv, theta


def interaction(x: Vector, z: Vector) -> Vector:
    """The shared model's vector for context x and arm features z: x ⊗ [1, z].

    Its first d entries are x itself (effects common to all arms); the rest are x·z_j
    interactions, so arms with similar features get similar estimates.
    """
    out = np.asarray(np.kron(x, np.concatenate(([1.0], z))), dtype=np.float64)
    return out
