"""Adapter paging simulation in the shape of POLAR's evaluation (arXiv 2604.16583, §A1).

N LoRA adapters, a fast-memory cache of K slots, a per-adapter paging latency, a stream of
contexts from task clusters with skewed popularity, and linear rewards with noise. Every
policy routes with the daemon's own LinUCB (banditd.policies.linucb) and learns with
banditd.policies.linear.update; the POLAR variants run banditd.cache.controller.

Net reward of a step = μ(x, a) − λ·(paging latency paid this step, ms): a request routed to a
non-resident adapter pays that adapter's latency; a controller's prefetch pays it too.
Regret is against the best fixed cache S* (|S*| ≤ K) with optimal cache-aware routing under the
true means: per context, max(max_{a∈S*} μ(x,a), max_{a∉S*} μ(x,a) − λ·ℓ_a).

Latencies (docs/paging.md has the derivation; an assumption, not a measurement): adapter size
log-uniform in 10–330 MB (rank-8 attention-only to rank-64 all-linear LoRA of a 7B model in
fp16) loaded at 2 GB/s (NVMe-bound) plus a 15–40 ms fixed overhead: about 20–200 ms.

Policies: "lru", "lfu" (cache-oblivious LinUCB; a miss loads the adapter, evicting the least
recently / least frequently used), "static" (K adapters with the best mean true reward, fixed;
cache-aware LinUCB), "oracle" (S* resident from the start, routes with the true means),
"polar" (cache-aware LinUCB + fixed-epoch controller), "polar+" (epoch doubling + forced
exploration). Misses of static and POLAR policies are transient loads (residency changes only
by the controller), as in POLAR.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from banditd.cache.controller import (
    ControllerParams,
    EpochClock,
    Residency,
    exploration_rate,
    force,
    plan,
    select,
)
from banditd.policies import linucb
from banditd.policies.choice import draw
from banditd.policies.linear import ArmState, prior, update

Array = npt.NDArray[np.float64]
POLICIES = ("lru", "lfu", "static", "polar", "polar+", "oracle")


@dataclass(frozen=True, slots=True)
class PagingScenario:
    """One simulated deployment. latency_weight λ: reward units per ms of paging."""

    adapters: int = 15
    capacity: int = 4
    dim: int = 8
    clusters: int = 8
    zipf: float = 1.0
    noise: float = 0.1
    latency_weight: float = 0.003
    horizon: int = 20_000
    alpha: float = 1.0
    epoch_steps: int = 250
    window: int = 512
    forced_exploration: float = 0.25


@dataclass(frozen=True, slots=True)
class PagingEnv:
    """True means μ(x, a) = θ_a·x, adapter latencies, and the context distribution."""

    theta: Array  # (N, d)
    latency_ms: Array  # (N,)
    centers: Array  # (C, d)
    popularity: Array  # (C,)
    noise: float
    spread: float = 0.3

    def contexts(self, rng: np.random.Generator, n: int) -> Array:
        c = rng.choice(len(self.popularity), size=n, p=self.popularity)
        x = self.centers[c] + self.spread * rng.standard_normal((n, self.centers.shape[1]))
        x[:, 0] = 1.0  # bias
        out: Array = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    def means(self, x: Array) -> Array:
        out: Array = x @ self.theta.T
        return out


def build_env(s: PagingScenario, rng: np.random.Generator) -> PagingEnv:
    """One specialist per cluster, a few generalists, the rest weak; Zipf cluster popularity."""
    d = s.dim
    centers = rng.standard_normal((s.clusters, d))
    centers[:, 0] = 0.0
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    centers[:, 0] = 1.0
    theta = np.zeros((s.adapters, d))
    for a in range(s.adapters):
        if a < s.clusters:  # specialist for cluster a
            theta[a, 0], theta[a, 1:] = 0.35, 0.7 * centers[a, 1:]
        elif a < s.clusters + 3:  # generalists of decreasing quality
            theta[a, 0] = 0.75 - 0.1 * (a - s.clusters)
        else:  # weak adapters with random preferences
            theta[a, 0], theta[a, 1:] = 0.3, 0.3 * rng.standard_normal(d - 1) / math.sqrt(d)
    theta *= math.sqrt(2.0)  # x is normalised with its bias ≈ 1/√2
    ranks = np.arange(1, s.clusters + 1, dtype=np.float64)
    popularity = ranks**-s.zipf / np.sum(ranks**-s.zipf)
    size_mb = np.exp(rng.uniform(math.log(10), math.log(330), s.adapters))
    latency = rng.uniform(15, 40, s.adapters) + size_mb / 2.0  # 2 GB/s = 2 MB/ms
    return PagingEnv(theta, latency, centers, popularity, s.noise)


def best_cache(env: PagingEnv, s: PagingScenario, xs: Array) -> tuple[int, ...]:
    """S*: the K-set maximising mean per-context value with optimal cache-aware routing."""
    mu = env.means(xs)
    paged = mu - s.latency_weight * env.latency_ms
    best: tuple[int, ...] = ()
    best_value = -math.inf
    for subset in itertools.combinations(range(s.adapters), s.capacity):
        mask = np.zeros(s.adapters, dtype=bool)
        mask[list(subset)] = True
        value = float(np.mean(np.maximum(mu[:, mask].max(1), paged[:, ~mask].max(1))))
        if value > best_value:
            best, best_value = subset, value
    return best


@dataclass
class RunResult:
    policy: str
    regret: Array  # cumulative regret after each step
    latency_ms: float  # total paging latency (misses + prefetches)
    misses: int
    loads: int  # residency loads (LRU/LFU insertions, controller prefetches)


@dataclass
class _Cache:
    resident: set[int]
    last_used: dict[int, int] = field(default_factory=dict)
    uses: dict[int, int] = field(default_factory=dict)


def _comparator(mu: Array, s: PagingScenario, env: PagingEnv, star: tuple[int, ...]) -> Array:
    mask = np.zeros(s.adapters, dtype=bool)
    mask[list(star)] = True
    paged = mu - s.latency_weight * env.latency_ms
    out: Array = np.maximum(mu[:, mask].max(1), paged[:, ~mask].max(1))
    return out


def run(policy: str, s: PagingScenario, seed: int) -> RunResult:
    """One seeded run. Environment and context stream depend on the seed only, not the policy."""
    env_rng, ctx_rng, noise_rng = (np.random.default_rng([seed, k]) for k in range(3))
    env = build_env(s, env_rng)
    star = best_cache(env, s, env.contexts(np.random.default_rng([seed, 9]), 4000))
    xs = env.contexts(ctx_rng, s.horizon)
    mu = env.means(xs)
    noise = s.noise * noise_rng.standard_normal(s.horizon)
    comparator = _comparator(mu, s, env, star)
    route_rng = np.random.default_rng([seed, 3])
    rng_explore = np.random.default_rng([seed, 4])
    params = linucb.LinUCBParams(alpha=s.alpha, l2=1.0)
    states: list[ArmState] = [prior(s.dim, 1.0)] * s.adapters
    ids = [str(a) for a in range(s.adapters)]
    cache = _Cache(set(star) if policy == "oracle" else set())
    if policy == "static":
        cache.resident = set(np.argsort(-mu.mean(0))[: s.capacity].tolist())
    lam, lat = s.latency_weight, env.latency_ms
    net = np.empty(s.horizon)
    misses = loads = 0
    latency = 0.0
    if policy in ("oracle", "static"):  # initial loads
        latency += float(lat[list(cache.resident)].sum())
        loads += len(cache.resident)
    prefetch_cost = latency * lam
    controller = ControllerParams(
        epoch_steps=s.epoch_steps,
        doubling=policy == "polar+",
        forced_exploration=s.forced_exploration if policy == "polar+" else 0.0,
    )
    clock, rows = EpochClock(), deque[Array](maxlen=s.window)
    for t in range(s.horizon):
        x = xs[t]
        aware = policy not in ("lru", "lfu")
        resident = np.fromiter((a in cache.resident for a in range(s.adapters)), np.bool_)
        penalty = np.where(resident, 0.0, lam * lat if aware else 0.0)
        if policy == "oracle":
            arm = int(np.argmax(mu[t] - penalty))
        else:
            choice = linucb.choose(states, [x] * s.adapters, penalty, params, route_rng)
            arm = choice.index
            rows.append(choice.estimate + choice.bonus)
            rate = exploration_rate(controller.forced_exploration, t + 1)
            if rate > 0 and rng_explore.random() < rate and not resident.all():
                arm = int(draw(force(choice.propensity, ~resident, 1.0), rng_explore))
        miss = arm not in cache.resident
        step_latency = float(lat[arm]) if miss else 0.0
        misses += miss
        if policy in ("lru", "lfu"):
            _demand_load(cache, arm, t, s.capacity, policy, miss)
            loads += miss
        net[t] = mu[t, arm] - lam * step_latency - prefetch_cost
        prefetch_cost = 0.0
        latency += step_latency
        if policy != "oracle":
            states[arm] = update(states[arm], x, float(mu[t, arm] + noise[t]))
        if policy in ("polar", "polar+"):
            clock, boundary = clock.tick(controller)
            if boundary or t == 0:
                new = _replan(cache, rows, ids, controller, clock, lam * lat, s)
                loads += len(new)
                prefetch_cost = lam * float(lat[new].sum()) if new else 0.0
                latency += float(lat[new].sum()) if new else 0.0
    regret = np.cumsum(comparator - net)
    return RunResult(policy, regret, latency, misses, loads)


def _demand_load(cache: _Cache, arm: int, t: int, k: int, policy: str, miss: bool) -> None:
    cache.last_used[arm] = t
    cache.uses[arm] = cache.uses.get(arm, 0) + 1
    if not miss:
        return
    if len(cache.resident) >= k:
        if policy == "lru":
            victim = min(cache.resident, key=lambda a: cache.last_used.get(a, -1))
        else:
            victim = min(cache.resident, key=lambda a: (cache.uses.get(a, 0), cache.last_used[a]))
        cache.resident.discard(victim)
    if k > 0:
        cache.resident.add(arm)


def _replan(
    cache: _Cache,
    rows: deque[Array],
    ids: list[str],
    params: ControllerParams,
    clock: EpochClock,
    load_cost: Array,
    s: PagingScenario,
) -> list[int]:
    """The controller step the daemon's Pager runs at an epoch end; returns loaded adapters."""
    residency = Residency(frozenset(ids[a] for a in cache.resident), s.capacity)
    utility = np.array(rows)
    horizon = params.epoch_steps * (2**clock.epoch if params.doubling else 1)
    target = select(ids, utility, residency, params, load_cost.tolist(), horizon)
    value = dict(zip(ids, utility.mean(0).tolist(), strict=True))
    directives = plan(residency, target, params, value)
    after = residency.apply(directives)
    new = sorted(int(a) for a in after.resident - residency.resident)
    cache.resident = {int(a) for a in after.resident}
    return new


def slope(regret: Array, start: float = 0.1) -> float:
    """Least-squares slope of log R(t) on log t over t in [start·T, T] (geometric grid)."""
    horizon = regret.shape[0]
    t = np.unique(np.geomspace(max(int(start * horizon), 1), horizon, 50).astype(int))
    r = np.maximum(regret[t - 1], 1e-9)
    return float(np.polyfit(np.log(t), np.log(r), 1)[0])
