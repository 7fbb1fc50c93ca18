"""The epoch-based adapter cache controller of POLAR / POLAR+ (Li & Li, arXiv 2604.16583). PURE.

Two timescales. Per request, a cache-aware router scores every adapter and charges a
non-resident one its expected paging cost. Per epoch, this controller picks the resident set S
(|S| ≤ K slots and Σ size ≤ capacity bytes) from learned utilities over recent contexts:

    f(S) = mean_x max_{a∈S} U[x, a]        (facility location: monotone submodular)

U[x, a] is the router's optimistic score (θ_a·x + bonus) for a recent context x. Greedy
maximisation of f is (1 − 1/e)-optimal; a non-resident adapter's gain over the next epoch is
charged its one-off load cost, so swaps must pay for themselves (hysteresis against churn).

POLAR: fixed epochs. POLAR+: epoch k lasts L·2^k requests, and the router sends a request to a
uniformly drawn non-resident adapter with probability ε_t = c/sqrt(t) (forced exploration,
`force`), so adapters that are never cached still get Θ(sqrt(T)) feedback.

Directives are values: Load(a) / Evict(a). Invariants (tests/unit/cache): applying a plan never
leaves more than capacity resident (unless the pinned adapters alone exceed it), never evicts a
pinned adapter, and never loads more than the load budget allows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

AdapterId = str
Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Load:
    """Bring this adapter into fast memory (prefetch)."""

    adapter: AdapterId


@dataclass(frozen=True, slots=True)
class Evict:
    """Drop this adapter from fast memory."""

    adapter: AdapterId


Directive = Load | Evict


@dataclass(frozen=True, slots=True)
class Residency:
    """One replica's fast memory: what is resident, and how much fits.

    capacity_slots: K adapters at most; capacity_bytes: Σ size at most (0 = no byte limit).
    size_bytes / load_ms: per-adapter size and measured load latency, where known.
    """

    resident: frozenset[AdapterId]
    capacity_slots: int
    capacity_bytes: int = 0
    size_bytes: Mapping[AdapterId, int] = field(default_factory=dict)
    load_ms: Mapping[AdapterId, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.capacity_slots < 0 or self.capacity_bytes < 0:
            raise ValueError(
                f"capacity must be >= 0, got {self.capacity_slots} slots,"
                f" {self.capacity_bytes} bytes"
            )

    def size(self, adapter: AdapterId) -> int:
        return int(self.size_bytes.get(adapter, 0))

    def fits(self, adapters: frozenset[AdapterId]) -> bool:
        """Whether this set fits in the capacity."""
        if len(adapters) > self.capacity_slots:
            return False
        return not self.capacity_bytes or sum(map(self.size, adapters)) <= self.capacity_bytes

    def apply(self, plan: Sequence[Directive]) -> Residency:
        """The residency after the serving stack carried out the plan."""
        resident = set(self.resident)
        for d in plan:
            if isinstance(d, Load):
                resident.add(d.adapter)
            else:
                resident.discard(d.adapter)
        return Residency(
            frozenset(resident),
            self.capacity_slots,
            self.capacity_bytes,
            self.size_bytes,
            self.load_ms,
        )


@dataclass(frozen=True, slots=True)
class PagingCost:
    """Expected paging latency of a non-resident adapter, and its price in reward units.

    latency = the replica's measured load_ms if reported, else default_ms + ms_per_mb·size/1e6;
    price = weight · latency (weight: reward units per millisecond).
    """

    weight: float = 0.0
    default_ms: float = 50.0
    ms_per_mb: float = 0.0

    def __post_init__(self) -> None:
        if min(self.weight, self.default_ms, self.ms_per_mb) < 0:
            raise ValueError(f"paging cost terms must be >= 0, got {self}")

    def latency_ms(self, adapter: AdapterId, residency: Residency) -> float:
        measured = residency.load_ms.get(adapter)
        if measured is not None:
            return float(measured)
        return self.default_ms + self.ms_per_mb * residency.size(adapter) / 1e6

    def price(self, adapter: AdapterId, residency: Residency) -> float:
        """Reward units a request routed to this adapter pays (0 when it is resident)."""
        if adapter in residency.resident:
            return 0.0
        return self.weight * self.latency_ms(adapter, residency)


@dataclass(frozen=True, slots=True)
class ControllerParams:
    """epoch_steps: L requests per epoch (POLAR+: epoch k lasts L·2^k); forced_exploration: c
    (POLAR+: route to a random non-resident adapter with probability c/sqrt(t); 0 = off);
    max_loads: loads per plan (0 = unlimited); pinned: never evicted, loaded first."""

    epoch_steps: int = 1000
    doubling: bool = False
    forced_exploration: float = 0.0
    max_loads: int = 0
    pinned: frozenset[AdapterId] = frozenset()

    def __post_init__(self) -> None:
        if self.epoch_steps < 1 or self.forced_exploration < 0 or self.max_loads < 0:
            raise ValueError(f"invalid controller params {self}")


def epoch_length(params: ControllerParams, epoch: int) -> int:
    """Requests in epoch k (0-based): L, or L·2^k with doubling (capped to avoid overflow)."""
    return params.epoch_steps * (2 ** min(epoch, 40) if params.doubling else 1)


@dataclass(frozen=True, slots=True)
class EpochClock:
    """Where the controller is on its timescale: epoch k, requests seen in it, requests in all."""

    epoch: int = 0
    steps: int = 0
    total: int = 0

    def tick(self, params: ControllerParams, n: int = 1) -> tuple[EpochClock, bool]:
        """Count n requests; True when the epoch ended (the next one starts at 0)."""
        steps, total = self.steps + n, self.total + n
        if steps >= epoch_length(params, self.epoch):
            return EpochClock(self.epoch + 1, 0, total), True
        return EpochClock(self.epoch, steps, total), False


@dataclass(frozen=True, slots=True)
class LoadBudget:
    """Token bucket of loads: at most rate_per_s on average, burst at once (rate 0 = no limit)."""

    rate_per_s: float = 0.0
    burst: int = 1
    tokens: float = 1.0
    at: float = 0.0

    def take(self, now: float, wanted: int) -> tuple[int, LoadBudget]:
        """Grant up to `wanted` loads now; returns (granted, the bucket after)."""
        if self.rate_per_s <= 0:
            return wanted, self
        tokens = min(float(self.burst), self.tokens + max(now - self.at, 0.0) * self.rate_per_s)
        granted = min(wanted, int(tokens))
        return granted, LoadBudget(self.rate_per_s, self.burst, tokens - granted, now)


def coverage(utility: Matrix, columns: Sequence[int]) -> float:
    """f(S) = mean over rows of max over the chosen columns, shifted so f(∅) = 0."""
    if utility.shape[0] == 0 or not columns:
        return 0.0
    floor = utility.min(axis=1)
    return float(np.mean(utility[:, list(columns)].max(axis=1) - floor))


def select(
    adapters: Sequence[AdapterId],
    utility: Matrix,
    residency: Residency,
    params: ControllerParams,
    load_cost: Sequence[float] = (),
    horizon: int = 1,
) -> tuple[AdapterId, ...]:
    """The target resident set, in priority order (pinned first, then by greedy gain).

    utility: (contexts × adapters) optimistic scores; load_cost: reward units one load of each
    adapter costs; horizon: requests the set will serve (gain·horizon must beat the load cost).
    """
    n = len(adapters)
    if utility.shape[1] != n:
        raise ValueError(f"utility has {utility.shape[1]} columns for {n} adapters")
    cost = np.zeros(n) if not load_cost else np.asarray(load_cost, dtype=np.float64)
    resident = [a in residency.resident for a in adapters]
    chosen: list[int] = []

    def fits(extra: int) -> bool:
        return residency.fits(frozenset(adapters[i] for i in [*chosen, extra]))

    pinned = sorted(
        (i for i, a in enumerate(adapters) if a in params.pinned), key=lambda i: not resident[i]
    )
    for i in pinned:  # resident pinned adapters first; each only if it still fits
        if fits(i):
            chosen.append(i)  # noqa: PERF401 (fits() reads `chosen`)
    base = coverage(utility, chosen)
    while len(chosen) < residency.capacity_slots:
        best, best_key, best_value = -1, (0.0, False), base
        for i in range(n):
            if i in chosen or not fits(i):
                continue
            value = coverage(utility, [*chosen, i])
            gain = (value - base) * horizon - (0.0 if resident[i] else cost[i])
            # Worth a slot: a positive net gain, or a resident adapter that costs nothing to keep.
            if (gain > 0 or (resident[i] and gain >= 0)) and (gain, resident[i]) > best_key:
                best, best_key, best_value = i, (gain, resident[i]), value
        if best < 0:
            break
        chosen.append(best)
        base = best_value
    chosen = _swap_search(chosen, len(pinned), utility, residency, adapters, horizon, cost)
    return tuple(adapters[i] for i in chosen)


def _swap_search(
    chosen: list[int],
    fixed: int,
    utility: Matrix,
    residency: Residency,
    adapters: Sequence[AdapterId],
    horizon: int,
    cost: npt.NDArray[np.float64],
    rounds: int = 3,
) -> list[int]:
    """Improve the greedy set by single swaps of non-pinned members (greedy can pick a
    generalist that two specialists beat). Objective: f(S)·horizon − loads' cost."""

    def net(members: list[int]) -> float:
        loads = sum(cost[i] for i in members if adapters[i] not in residency.resident)
        return coverage(utility, members) * horizon - float(loads)

    best = net(chosen)
    for _ in range(rounds):
        improved = False
        for pos in range(fixed, len(chosen)):
            for j in range(len(adapters)):
                if j in chosen:
                    continue
                trial = [*chosen[:pos], j, *chosen[pos + 1 :]]
                if not residency.fits(frozenset(adapters[i] for i in trial)):
                    continue
                value = net(trial)
                if value > best + 1e-12:
                    chosen, best, improved = trial, value, True
        if not improved:
            break
    return chosen


def exploration_rate(c: float, t: int) -> float:
    """POLAR+ forced-exploration probability at request t: ε_t = min(1, c/sqrt(t))."""
    return min(1.0, c / math.sqrt(max(t, 1))) if c > 0 else 0.0


def force(propensity: Vector, eligible: npt.NDArray[np.bool_], rate: float) -> Vector:
    """Mix a policy's propensities with forced exploration of the eligible (non-resident) arms.

    p' = (1 − ε)·p + ε·1[eligible]/#eligible; unchanged when nothing is eligible. Sums to 1.
    """
    count = int(eligible.sum())
    if rate <= 0 or count == 0:
        return propensity
    mixed: Vector = (1.0 - rate) * propensity + rate * eligible / count
    return mixed


def plan(
    residency: Residency,
    target: Sequence[AdapterId],
    params: ControllerParams,
    value: Mapping[AdapterId, float] | None = None,
    budget: int | None = None,
) -> list[Directive]:
    """Directives moving the resident set towards `target` (priority order).

    Loads the missing targets in priority order, at most min(max_loads, budget) of them, and
    evicts only what must go to make room: non-target, non-pinned adapters, lowest `value`
    first. A load that cannot be made room for is dropped. Evictions come before loads.
    """
    limit = params.max_loads or len(target)
    if budget is not None:
        limit = min(limit, budget)
    value = value or {}
    wanted = set(target)
    victims = sorted(
        (a for a in residency.resident if a not in wanted and a not in params.pinned),
        key=lambda a: (value.get(a, 0.0), a),
    )
    resident = set(residency.resident)
    evicts: list[Directive] = []
    loads: list[Directive] = []
    # A replica over its capacity (e.g. it was shrunk) first sheds non-pinned adapters.
    while not residency.fits(frozenset(resident)) and victims:
        a = victims.pop(0)
        resident.discard(a)
        evicts.append(Evict(a))
    for a in target:
        if len(loads) >= limit:
            break
        if a in resident:
            continue
        trial, dropped = set(resident) | {a}, []
        queue = list(victims)
        while not residency.fits(frozenset(trial)) and queue:
            v = queue.pop(0)
            trial.discard(v)
            dropped.append(v)
        if not residency.fits(frozenset(trial)):
            continue
        victims = queue
        resident = trial
        evicts.extend(Evict(v) for v in dropped)
        loads.append(Load(a))
    return evicts + loads
