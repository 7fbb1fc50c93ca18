"""A fleet of workers and Redis shards serving Route+Feedback: the sizing formulas, and a
discrete-event simulation that checks them (docs/scale.md; `make sim-scale`).

One Route+Feedback ("rt") costs, in µs of one core (measured by bench/scale_inputs.py):

    c_w   worker CPU (gRPC, handler, Redis client), split c_w·f (Route) and c_w·(1−f) (Feedback)
    r     Redis CPU: r_route (load.lua + record.lua) + r_fb (settle.lua), socket I/O included
    E(g)  arms a Route refetches because they changed since this worker last loaded the
          segment and it did not absorb the change; each costs c_x of the worker (decode +
          O(d³) refactorisation) and r_x of Redis (and one sums blob on the wire)

With a segment's Routes and Feedbacks each spread uniformly over g workers, a worker's cache of
an arm stays fresh between two of its loads only if every update of that arm in between was
settled by this worker (it absorbs its own settles, RedisModelStore._absorb). An update hits a
given arm and is settled elsewhere with probability q = (1 − 1/g)/K (arms chosen uniformly: the
worst case, a concentrated policy changes fewer distinct arms); between two loads there are
1 + X updates, X geometric with mean g − 1 (the other workers' Routes). So

    E(g) = K·(1 − (1 − q)·(1/g) / (1 − (1 − 1/g)(1 − q)))       E(1) = 0, E(g) → K as g → ∞

Segment s has popularity p_s (Zipf over ranks). Worker w and shard j carry the demands

    D_w = Σ_{s served by w} (p_s / g_s)·(c_w + E(g_s)·c_x)
    D_j = Σ_{s on j} p_s·(r + E(g_s)·r_x)

per rt offered, so the fleet saturates at λ_max = 10⁶ / max(max_w D_w, max_j D_j) rt/s (the
bottleneck law), and λ·D is each one's utilisation. A shard is a slot range of a Redis Cluster
(CRC16 of the hash tag mod 16384, equal ranges); the tag is the policy (all of a policy's
segments on one shard: today) or the (policy, segment). `random` balancing spreads every
segment over all N workers (g_s = N); `affinity` pins a segment to g_s = min(N, ⌈2·p_s·N⌉)
workers (a segment over half a worker's fair share spreads), placed hottest first on the least
loaded workers (`groups`).

The simulation runs the same fleet event by event: each worker and each shard is one FIFO core;
a Route is worker CPU, a network round trip to the segment's shard (load: refetched arms counted
from real per-arm stamps), worker CPU, a round trip (record), worker CPU; its Feedback is worker
CPU and a round trip (settle: bumps the chosen arm's stamp; the settling worker absorbs it if
its cache held the stamp before, as RedisModelStore._absorb). Open loop (Poisson arrivals): the
busiest core's busy share U at an offered load λ gives the simulated saturation point λ/U, and
the Route latency shows the knee. Pure Python + numpy, seeded.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
SLOTS = 16384  # Redis Cluster hash slots


@dataclass(frozen=True, slots=True)
class Costs:
    """What one Route+Feedback costs at one request shape (µs of one core; bytes)."""

    dim: int
    arms: int
    worker_us: float  # c_w: worker CPU per rt, its own updates absorbed (no refetch)
    route_share: float  # f: the Route's part of worker_us
    redis_route_us: float  # r_route: Redis CPU per Route (load + record), socket I/O included
    redis_feedback_us: float  # r_fb: Redis CPU per Feedback (settle)
    refetch_worker_us: float  # c_x: worker CPU per refetched arm
    refetch_redis_us: float  # r_x: Redis CPU per refetched arm
    refetch_bytes: int  # one arm's sums blob, Redis → worker
    route_trips: int = 2  # sequential Redis round trips in a Route (load, record)
    feedback_trips: int = 1  # in a Feedback (settle)
    segment_bytes: int = 0  # Redis memory of one segment with every arm trained
    pending_bytes: int = 0  # one decision waiting for its reward
    tombstone_bytes: int = 0  # one settled decision remembered for DUPLICATE answers

    @property
    def redis_us(self) -> float:
        return self.redis_route_us + self.redis_feedback_us


@dataclass(frozen=True, slots=True)
class Fleet:
    workers: int
    shards: int
    segments: int = 1000
    zipf: float = 1.0  # p_s ∝ 1 / rank^zipf
    policies: int = 1  # segment i belongs to policy i mod policies
    tag: Literal["policy", "segment"] = "segment"
    balance: Literal["random", "affinity"] = "random"
    rtt_us: float = 200.0  # worker ↔ Redis network round trip


def popularity(segments: int, zipf: float) -> Array:
    """p_s for ranks 1..segments (sums to 1)."""
    weights = 1.0 / np.arange(1, segments + 1, dtype=np.float64) ** zipf
    out: Array = weights / weights.sum()
    return out


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


_CRC = _crc_table()


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, the checksum Redis Cluster takes of a key's hash tag."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC[(crc >> 8) ^ byte]
    return crc


def slot_tags(segments: int, policies: int, tag: str) -> list[str]:
    """Each segment's hash tag: its policy's name, or its (policy, segment)."""
    names = [f"policy{s % policies}" for s in range(segments)]
    return names if tag == "policy" else [f"{n}:segment{s}" for s, n in enumerate(names)]


@functools.lru_cache(maxsize=64)
def _slots(segments: int, policies: int, tag: str) -> tuple[int, ...]:
    return tuple(crc16(t.encode()) % SLOTS for t in slot_tags(segments, policies, tag))


def shard_of_segments(fleet: Fleet) -> npt.NDArray[np.int64]:
    """The shard each segment's keys live on (shards own equal ranges of the 16384 slots)."""
    slots = np.array(_slots(fleet.segments, fleet.policies, fleet.tag), dtype=np.int64)
    out: npt.NDArray[np.int64] = slots * fleet.shards // SLOTS
    return out


def sharers(fleet: Fleet, p: Array) -> npt.NDArray[np.int64]:
    """g_s: how many workers serve segment s."""
    n = fleet.workers
    if fleet.balance == "random":
        return np.full(len(p), n, dtype=np.int64)
    return np.minimum(n, np.maximum(1, np.ceil(2.0 * p * n - 1e-9))).astype(np.int64)


def groups(fleet: Fleet, p: Array, cost: Array) -> list[tuple[int, ...]]:
    """Affinity balancing: the workers serving each segment. Segments are placed hottest first,
    each on the g_s least loaded workers so far (load: p_s/g_s · its cost per rt), as a
    bounded-load consistent hash would spread them; ties go to the lowest worker index."""
    g = sharers(fleet, p)
    heap = [(0.0, w) for w in range(fleet.workers)]
    out: list[tuple[int, ...]] = [()] * fleet.segments
    for s in np.argsort(-p, kind="stable").tolist():
        taken = [heapq.heappop(heap) for _ in range(int(g[s]))]
        share = float(p[s] / g[s] * cost[s])
        out[s] = tuple(w for _, w in taken)
        for load, w in taken:
            heapq.heappush(heap, (load + share, w))
    return out


def refetched(g: npt.ArrayLike, arms: int) -> Array:
    """E(g): expected arms a Route refetches when its segment is spread over g workers."""
    g = np.asarray(g, dtype=np.float64)
    miss = (1.0 - 1.0 / g) / arms  # q: an update hits this arm and another worker settles it
    clean = (1.0 - miss) / g / (1.0 - (1.0 - 1.0 / g) * (1.0 - miss))
    out: Array = arms * (1.0 - clean)
    return out


@dataclass(frozen=True, slots=True)
class Capacity:
    rate: float  # λ_max, rt/s
    bottleneck: str  # "worker N" or "shard N"
    worker_demand_us: Array  # D_w per rt offered to the fleet
    shard_demand_us: Array  # D_j
    refetch_per_route: float  # E averaged over Routes
    slot_limit_rate: float  # λ at which the busiest hash tag alone fills one shard's core


def _redis_per_rt(costs: Costs, fleet: Fleet, p: Array) -> tuple[Array, Array]:
    """Per segment: E(g_s), and Redis's CPU per rt of it (r + E·r_x)."""
    e = refetched(sharers(fleet, p), costs.arms)
    return e, costs.redis_us + e * costs.refetch_redis_us


def _shard_demand(fleet: Fleet, p: Array, per_rt_redis: Array) -> Array:
    out: Array = np.bincount(
        shard_of_segments(fleet), weights=p * per_rt_redis, minlength=fleet.shards
    ).astype(np.float64)
    return out


def _hottest_slot(fleet: Fleet, p: Array, per_rt_redis: Array) -> float:
    """The Redis demand per rt offered of the busiest hash tag: no shard count divides it."""
    tags: dict[str, float] = {}
    names = slot_tags(fleet.segments, fleet.policies, fleet.tag)
    for name, demand in zip(names, (p * per_rt_redis).tolist(), strict=True):
        tags[name] = tags.get(name, 0.0) + demand
    return max(tags.values())


def capacity(costs: Costs, fleet: Fleet) -> Capacity:
    """The formulas above for one fleet."""
    p = popularity(fleet.segments, fleet.zipf)
    g = sharers(fleet, p)
    e, per_rt_redis = _redis_per_rt(costs, fleet, p)
    per_rt_worker = costs.worker_us + e * costs.refetch_worker_us
    worker = np.zeros(fleet.workers)
    if fleet.balance == "random":
        worker += float(np.sum(p * per_rt_worker)) / fleet.workers
    else:
        for s, group in enumerate(groups(fleet, p, per_rt_worker)):
            worker[list(group)] += p[s] / g[s] * per_rt_worker[s]
    shard = _shard_demand(fleet, p, per_rt_redis)
    w, j = int(np.argmax(worker)), int(np.argmax(shard))
    worst = max(worker[w], shard[j])
    return Capacity(
        1e6 / worst,
        f"worker {w}" if worker[w] >= shard[j] else f"shard {j}",
        worker, shard, float(np.sum(p * e)), 1e6 / _hottest_slot(fleet, p, per_rt_redis),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    workers: int
    shards: int | None  # None: no number of shards serves the rate (a hot slot)
    shards_even: int  # shards for the rate spread evenly over slots (no hot slot, no imbalance)
    capacity: Capacity
    route_floor_us: float  # a Route with no queueing: round trips + CPU
    limits: tuple[str, ...]


def plan(
    costs: Costs,
    rate: float,
    target: float = 0.7,
    base: Fleet | None = None,
    max_workers: int = 20000,
    max_shards: int = 2000,
) -> Plan:
    """The fewest workers and shards whose busiest core runs at most `target` at `rate`."""
    base = base or Fleet(1, 1)
    budget = target * 1e6
    workers = max(1, math.ceil(rate * costs.worker_us / budget))  # a floor: no refetch, even
    while workers < max_workers:
        demand = capacity(costs, _with(base, workers, 1)).worker_demand_us
        if rate * float(np.max(demand)) <= budget:
            break
        workers = max(workers + 1, math.ceil(workers * 1.02))
    fleet = _with(base, workers, 1)
    p = popularity(base.segments, base.zipf)
    _, per_rt_redis = _redis_per_rt(costs, fleet, p)
    limits: list[str] = []
    even = max(1, math.ceil(rate * float(np.sum(p * per_rt_redis)) / budget))
    shards: int | None = even
    hottest = _hottest_slot(fleet, p, per_rt_redis)
    if rate * hottest > budget:
        shards = None
        limits.append(
            f"hot slot: its busiest hash tag alone needs {rate * hottest / 1e6:.2f} cores of"
            f" Redis ({base.tag} hash tags); no shard count serves it"
        )
    while shards is not None:
        if rate * float(np.max(_shard_demand(_with(base, workers, shards), p, per_rt_redis))) <= (
            budget
        ):
            break
        shards = max(shards + 1, math.ceil(shards * 1.02))
        if shards > max_shards:
            shards = None
            limits.append(f"the slots do not balance over {max_shards} shards")
    found = capacity(costs, _with(base, workers, shards or 1))
    if found.refetch_per_route >= 0.5:
        limits.append(
            f"cache coherence: {found.refetch_per_route:.1f} arms refetched per Route"
            f" ({found.refetch_per_route * costs.refetch_bytes / 1e3:.0f} kB each Route)"
        )
    floor = (
        costs.route_trips * base.rtt_us + costs.worker_us * costs.route_share
        + costs.redis_route_us
    )  # fmt: skip
    return Plan(workers, shards, even, found, floor, tuple(limits))


def _with(base: Fleet, workers: int, shards: int) -> Fleet:
    return Fleet(workers, shards, base.segments, base.zipf, base.policies, base.tag,
                 base.balance, base.rtt_us)  # fmt: skip


def redis_memory(
    costs: Costs, rate: float, segments: int, reward_delay_s: float, tombstone_ttl_s: float
) -> dict[str, float]:
    """Bytes Redis holds in steady state: models, decisions waiting, tombstones (Little's law)."""
    parts = {
        "models": float(segments * costs.segment_bytes),
        "pending": rate * reward_delay_s * costs.pending_bytes,
        "tombstones": rate * tombstone_ttl_s * costs.tombstone_bytes,
    }
    parts["total"] = sum(parts.values())
    return parts


# -- the simulation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimResult:
    offered: float  # rt/s offered (open loop), or clients (closed loop)
    throughput: float  # rt/s completed in the measured window
    route_p50_us: float
    route_p99_us: float
    refetch_per_route: float
    worker_busy: float  # busiest worker's share of the window spent on CPU
    shard_busy: float  # busiest shard's
    busy: dict[str, float]  # every core's ("worker 3", "shard 0")


_ROUTE_A, _LOAD, _ROUTE_B, _RECORD, _ROUTE_C, _FEEDBACK, _SETTLE, _FB_DONE, _ARRIVE = range(9)


def simulate(
    costs: Costs,
    fleet: Fleet,
    seconds: float,
    seed: int,
    rate: float | None = None,
    clients: int | None = None,
    warmup: float = 0.25,
    preroll: int = 0,
) -> SimResult:
    """Run the fleet for `seconds` (simulated) under Poisson arrivals at `rate` (open loop) or
    `clients` closed-loop clients; statistics over the last (1 − warmup) of the time.

    `preroll` Route+Feedbacks first run through the caches alone (no clock), so the run starts
    from caches as stale as a fleet's long in service, not all fresh.
    """
    if (rate is None) == (clients is None):
        raise ValueError("give exactly one of rate (open loop) and clients (closed loop)")
    rng = np.random.default_rng(seed)
    p = popularity(fleet.segments, fleet.zipf)
    cdf = np.cumsum(p)
    shard_of = shard_of_segments(fleet).tolist()
    g = sharers(fleet, p).tolist()
    placed = (
        groups(fleet, p, costs.worker_us + refetched(g, costs.arms) * costs.refetch_worker_us)
        if fleet.balance == "affinity"
        else []
    )
    k = costs.arms
    stamps = np.zeros((fleet.segments, k), dtype=np.int64)
    views: dict[tuple[int, int], npt.NDArray[np.int64]] = {}
    counter = 0
    worker_free = [0.0] * fleet.workers
    shard_free = [0.0] * fleet.shards
    worker_busy = [0.0] * fleet.workers
    shard_busy = [0.0] * fleet.shards
    half = fleet.rtt_us / 2e6
    third = costs.worker_us * costs.route_share / 3e6
    fb_cpu = costs.worker_us * (1.0 - costs.route_share) / 1e6
    r_half = costs.redis_route_us / 2e6
    r_fb = costs.redis_feedback_us / 1e6
    c_x, r_x = costs.refetch_worker_us / 1e6, costs.refetch_redis_us / 1e6
    begin = seconds * warmup
    latencies: list[float] = []
    refetches: list[int] = []
    done = 0
    events: list[tuple[float, int, int, list[float]]] = []
    seq = 0

    def push(t: float, kind: int, job: list[float]) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, job))

    def on_worker(w: int, now: float, cpu: float) -> float:
        start = max(now, worker_free[w])
        worker_free[w] = start + cpu
        worker_busy[w] += max(0.0, min(start + cpu, seconds) - max(start, begin))
        return start + cpu

    def on_shard(j: int, now: float, cpu: float) -> float:
        start = max(now, shard_free[j])
        shard_free[j] = start + cpu
        shard_busy[j] += max(0.0, min(start + cpu, seconds) - max(start, begin))
        return start + cpu

    def view_of(w: int, s: int) -> npt.NDArray[np.int64]:
        """Worker w's cached stamps of segment s (first use: the state at time 0, all fresh)."""
        view = views.get((w, s))
        if view is None:
            view = views[(w, s)] = np.zeros(k, dtype=np.int64)
        return view

    def pick_worker(s: int) -> int:
        if fleet.balance == "random":
            return int(rng.integers(fleet.workers))
        group = placed[s]
        return group[int(rng.integers(len(group)))]

    # job: [segment, worker, t_route_start, refetched, arm, prev_stamp, new_stamp]
    def new_job(now: float) -> None:
        s = min(int(np.searchsorted(cdf, rng.random(), side="right")), fleet.segments - 1)
        w = pick_worker(s)
        job = [float(s), float(w), now, 0.0, 0.0, 0.0, 0.0]
        push(on_worker(w, now, third), _ROUTE_A, job)

    for _ in range(preroll):  # the caches' dynamics alone, untimed: a fleet long in service
        s = min(int(np.searchsorted(cdf, rng.random(), side="right")), fleet.segments - 1)
        views[(pick_worker(s), s)] = stamps[s].copy()
        arm = int(rng.integers(k))
        counter += 1
        prev, stamps[s, arm] = int(stamps[s, arm]), counter
        view = view_of(pick_worker(s), s)
        if view[arm] == prev:
            view[arm] = counter
    if rate is not None:
        push(float(rng.exponential(1.0 / rate)), _ARRIVE, [])
    else:
        assert clients is not None
        for _ in range(clients):
            new_job(float(rng.random()) * 1e-4)
    while events:
        now, _, kind, job = heapq.heappop(events)
        if now > seconds:
            break
        if kind == _ARRIVE:
            assert rate is not None
            new_job(now)
            push(now + float(rng.exponential(1.0 / rate)), _ARRIVE, [])
            continue
        s, w = int(job[0]), int(job[1])
        if kind == _ROUTE_A:
            at = now + half
            current = stamps[s]
            changed = int(np.count_nonzero(current != view_of(w, s)))
            views[(w, s)] = current.copy()
            job[3] = changed
            push(on_shard(shard_of[s], at, r_half + changed * r_x) + half, _LOAD, job)
        elif kind == _LOAD:
            push(on_worker(w, now, third + job[3] * c_x), _ROUTE_B, job)
        elif kind == _ROUTE_B:
            push(on_shard(shard_of[s], now + half, r_half) + half, _RECORD, job)
        elif kind == _RECORD:
            push(on_worker(w, now, third), _ROUTE_C, job)
        elif kind == _ROUTE_C:
            if now > begin:
                latencies.append(now - job[2])
                refetches.append(int(job[3]))
            w2 = pick_worker(s)  # the Feedback is balanced like a Route of its segment
            job[1] = float(w2)
            push(on_worker(w2, now, fb_cpu), _FEEDBACK, job)
        elif kind == _FEEDBACK:
            at = on_shard(shard_of[s], now + half, r_fb)
            arm = int(rng.integers(k))
            counter += 1
            job[4], job[5], job[6] = arm, float(stamps[s, arm]), float(counter)
            stamps[s, arm] = counter
            push(at + half, _FB_DONE, job)
        elif kind == _FB_DONE:
            view = view_of(w, s)
            arm = int(job[4])
            if view[arm] == int(job[5]):
                view[arm] = int(job[6])  # absorbed: its own update needs no refetch
            if now > begin:
                done += 1
            if clients is not None:
                new_job(now)
    window = seconds - begin
    lat = np.array(latencies) * 1e6 if latencies else np.array([math.nan])
    return SimResult(
        rate if rate is not None else float(clients or 0),
        done / window,
        float(np.percentile(lat, 50)),
        float(np.percentile(lat, 99)),
        float(np.mean(refetches)) if refetches else math.nan,
        max(worker_busy) / window,
        max(shard_busy) / window,
        {f"worker {w}": b / window for w, b in enumerate(worker_busy)}
        | {f"shard {j}": b / window for j, b in enumerate(shard_busy)},
    )


def preroll(fleet: Fleet, per_pair: int = 10, most: int = 200_000) -> int:
    """Untimed Route+Feedbacks that bring the caches near their steady state."""
    return min(most, per_pair * fleet.workers * fleet.segments)


def saturation(result: SimResult, core: str = "") -> float:
    """The rate at which a core would be always busy: offered / its busy share (the utilisation
    law U = λ·D, with D as the simulation found it: the segments drawn, the arms refetched, the
    slots hashed). `core` (e.g. the formula's bottleneck, "worker 3"): that core's; default:
    the run's busiest core's, which a short run biases low (the largest of many noisy shares)."""
    if core:
        return result.offered / result.busy[core]
    return result.offered / max(result.worker_busy, result.shard_busy)


def latency_curve(
    costs: Costs, fleet: Fleet, loads: Sequence[float], seconds: float, seed: int
) -> list[SimResult]:
    """Open loop at each offered load (rt/s)."""
    return [
        simulate(costs, fleet, seconds, seed, rate=rate, preroll=preroll(fleet)) for rate in loads
    ]
