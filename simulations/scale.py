"""Fleet plan: workers and Redis Cluster shards for a Route+Feedback rate, from measured costs,
checked by a discrete-event simulation (docs/scale.md; `make sim-scale`).

    python simulations/scale.py [--rate 100000] [--inputs out/scale-inputs.json] [--no-check]

Costs per shape default to the values measured for docs/scale.md (`python -m bench.scale_inputs`
writes fresh ones; pass its JSON with --inputs). Formulas and simulation: banditd/sim/fleet.py.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from banditd.sim.fleet import (
    Costs,
    Fleet,
    capacity,
    latency_curve,
    plan,
    popularity,
    redis_memory,
    saturation,
)

# Measured by `python -m bench.scale_inputs` (2026-12-02 02:59-03:05 UTC, at 3dd73e0, on the
# 2-vCPU bench VM; docs/scale.md, "Inputs"). µs of one core per Route+Feedback; bytes.
MEASURED = {
    "8x4": Costs(dim=8, arms=4, worker_us=1667.0, route_share=0.649, redis_route_us=136.4,
                 redis_feedback_us=93.2, refetch_worker_us=76.2, refetch_redis_us=5.4,
                 refetch_bytes=384, segment_bytes=2144, pending_bytes=1287, tombstone_bytes=273),
    "32x16": Costs(dim=32, arms=16, worker_us=1799.0, route_share=0.664, redis_route_us=142.4,
                   redis_feedback_us=144.2, refetch_worker_us=126.9, refetch_redis_us=13.3,
                   refetch_bytes=4512, segment_bytes=83068, pending_bytes=1500,
                   tombstone_bytes=265),
    "64x64": Costs(dim=64, arms=64, worker_us=3547.0, route_share=0.732, redis_route_us=393.5,
                   redis_feedback_us=480.6, refetch_worker_us=322.6, refetch_redis_us=53.6,
                   refetch_bytes=17184, segment_bytes=1318637, pending_bytes=1798,
                   tombstone_bytes=263),
}  # fmt: skip


def load_inputs(path: str) -> dict[str, Costs]:
    """Costs per shape from bench.scale_inputs' JSON (keys "DxK")."""
    data = json.loads(Path(path).read_text())
    return {key: Costs(**entry["costs"]) for key, entry in data.items() if isinstance(entry, dict)}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1e12:
        return f"{value / 1e12:.1f} T{unit}"
    if abs(value) >= 1e9:
        return f"{value / 1e9:.1f} G{unit}"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f} M{unit}"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f} k{unit}"
    return f"{value:,.0f}{' ' + unit if unit else ''}"


def print_plans(inputs: dict[str, Costs], args: argparse.Namespace) -> None:
    p = popularity(args.segments, args.zipf)
    print(
        f"== plan for {args.rate:,.0f} Route+Feedback/s: {args.segments:,} segments, Zipf"
        f" {args.zipf:g} (hottest {100 * p[0]:.1f}% = {args.rate * p[0]:,.0f}/s),"
        f" {args.policies} polic{'y' if args.policies == 1 else 'ies'}, every core at most"
        f" {100 * args.target:.0f}% busy, RTT {args.rtt_us:g} µs =="
    )
    header = (f"{'shape':<7}{'tags':<9}{'balance':<10}{'workers':>8}{'shards':>8}"
              f"{'refetch/Route':>14}{'kB/Route':>9}{'Route floor':>12}  limits")  # fmt: skip
    print(header)
    print("-" * len(header))
    for key, costs in inputs.items():
        for tag in ("policy", "segment"):
            for balance in ("random", "affinity"):
                base = Fleet(1, 1, args.segments, args.zipf, args.policies, tag, balance,
                             args.rtt_us)  # fmt: skip
                got = plan(costs, args.rate, args.target, base)
                kb = got.capacity.refetch_per_route * costs.refetch_bytes / 1e3
                floor_ms = got.route_floor_us / 1e3
                limits = list(got.limits)
                if floor_ms > args.deadline_ms:
                    limits.append(f"Route floor over the {args.deadline_ms:g} ms deadline")
                shards = got.shards if got.shards else f"-({got.shards_even})"
                print(
                    f"{key:<7}{tag:<9}{balance:<10}{got.workers:>8,}{shards:>8}"
                    f"{got.capacity.refetch_per_route:>14.2f}{kb:>9.1f}{floor_ms:>10.2f}ms"
                    f"  {'; '.join(limits) or '-'}"
                )
    print("(shards -(N): none serves the rate; N would, were the traffic spread evenly over slots)")
    for key, costs in inputs.items():
        one = 1e6 / costs.redis_us
        share = 100 * args.target * one / args.rate
        print(f"  {key}: one (policy, segment) takes at most {args.target * one:,.0f} rt/s with its"
              f" shard {100 * args.target:.0f}% busy ({one:,.0f} at 100%): {share:.1f}% of"
              f" {args.rate:,.0f}/s (before refetches)")  # fmt: skip
    print()
    print(f"Redis memory (reward delay {args.reward_delay_s:g} s, tombstones kept"
          f" {args.tombstone_ttl_s:g} s; per-item bytes measured):")  # fmt: skip
    for key, costs in inputs.items():
        mem = redis_memory(costs, args.rate, args.segments, args.reward_delay_s,
                           args.tombstone_ttl_s)  # fmt: skip
        print(
            f"  {key:<7} models {_fmt(mem['models'], 'B')}, pending {_fmt(mem['pending'], 'B')},"
            f" tombstones {_fmt(mem['tombstones'], 'B')}: total {_fmt(mem['total'], 'B')}"
        )
    print()


LOADS = (0.5, 0.7, 0.9, 1.1)  # offered, as fractions of the formula's saturation point


def print_check(inputs: dict[str, Costs], args: argparse.Namespace) -> None:
    """The simulation against the formulas, for fleets planned with per-segment tags."""
    print(
        f"== simulation check ({args.check_segments:,} segments, fleets planned for"
        f" {args.rate * args.check_scale:,.0f} rt/s so that a run takes seconds; open loop,"
        f" {args.seconds:g} s simulated per run, seed {args.seed}): the saturation point from the"
        " busy share, at 70% load, of the core the formula names as the bottleneck (and of the"
        " run's busiest core), refetched arms per Route, Route latency =="
    )
    loads = ", ".join(f"{100 * f:.0f}%" for f in LOADS)
    header = (f"{'shape':<7}{'balance':<10}{'fleet':>12}{'formula rt/s':>14}{'simulated':>11}"
              f"{'sim/formula':>12}{'(busiest)':>10}{'E formula':>10}{'E sim':>7}   Route p50/p99"
              f" ms at {loads} of the formula's saturation (done/offered at 110%)")  # fmt: skip
    print(header)
    print("-" * len(header))
    for key, costs in inputs.items():
        for balance in ("random", "affinity"):
            base = Fleet(1, 1, args.check_segments, args.zipf, args.policies, "segment", balance,
                         args.rtt_us)  # fmt: skip
            got = plan(costs, args.rate * args.check_scale, args.target, base)
            if got.shards is None:
                print(f"{key:<7}{balance:<10}  no fleet: {'; '.join(got.limits)}")
                continue
            fleet = replace(base, workers=got.workers, shards=got.shards)
            cap = capacity(costs, fleet)
            started = time.perf_counter()
            runs = latency_curve(costs, fleet, [f * cap.rate for f in LOADS], args.seconds,
                                 args.seed)  # fmt: skip
            at70 = runs[LOADS.index(0.7)]
            simulated, busiest = saturation(at70, cap.bottleneck), saturation(at70)
            lat = ", ".join(f"{r.route_p50_us / 1e3:.1f}/{r.route_p99_us / 1e3:.1f}" for r in runs)
            print(
                f"{key:<7}{balance:<10}{f'{fleet.workers}w {fleet.shards}s':>12}"
                f"{cap.rate:>14,.0f}{simulated:>11,.0f}"
                f"{100 * simulated / cap.rate:>11.1f}%{100 * busiest / cap.rate:>9.1f}%"
                f"{cap.refetch_per_route:>10.2f}"
                f"{at70.refetch_per_route:>7.2f}   {lat}"
                f" ({100 * runs[-1].throughput / runs[-1].offered:.0f}%)"
                f"  [{time.perf_counter() - started:.1f} s]"
            )
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", default="", help="bench.scale_inputs JSON (default: MEASURED)")
    ap.add_argument("--rate", type=float, default=100_000.0, help="Route+Feedback per second")
    ap.add_argument("--segments", type=int, default=10_000)
    ap.add_argument("--zipf", type=float, default=0.6, help="segment popularity ∝ 1/rank^zipf")
    ap.add_argument("--policies", type=int, default=1)
    ap.add_argument("--rtt-us", type=float, default=200.0, help="worker ↔ Redis round trip")
    ap.add_argument("--deadline-ms", type=float, default=50.0, help="the caller's Route deadline")
    ap.add_argument("--target", type=float, default=0.7, help="utilisation of the busiest core")
    ap.add_argument("--reward-delay-s", type=float, default=60.0)
    ap.add_argument("--tombstone-ttl-s", type=float, default=86_400.0)
    ap.add_argument("--no-check", action="store_true", help="formulas only, no simulation")
    ap.add_argument("--check-scale", type=float, default=0.05, help="simulate rate × this")
    ap.add_argument("--check-segments", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=2.0, help="simulated seconds per run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    inputs = load_inputs(args.inputs) if args.inputs else MEASURED
    print_plans(inputs, args)
    if not args.no_check:
        print_check(inputs, args)


if __name__ == "__main__":
    main()
