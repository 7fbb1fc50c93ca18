"""The measured inputs of the fleet plan (docs/scale.md, simulations/scale.py): what one
Route+Feedback costs a worker and Redis on the Redis store, per request shape.

    python -m bench.scale_inputs [--shape DxK ...] [--calls N] [--out out/scale-inputs.json]

Against a throwaway redis-server (CPU0), per shape (d−1 numeric features + bias, K arms):

- **under load** (bench.grpc's daemon config with the Redis store, `banditd serve` on CPU0,
  `loadgen conc` 64 in flight on CPU1, 5 runs, medians): the daemon's CPU per round trip (rt)
  from /proc (gRPC, handler, redis-py: one worker's whole cost) and redis-server's CPU per rt
  from INFO cpu (scripts plus socket I/O);
- **in-process** (RouterService.Route + Feedback on parsed requests, no gRPC; one event loop):
  with one replica, the Redis round trips per rt (calls the store made), the worker CPU split
  between Route and Feedback (process_time), Redis's CPU per Route and per Feedback (INFO cpu)
  and inside scripts (INFO commandstats); with two replicas taking turns, the arms each Route
  refetches (one: the arm the other replica changed); and what a refetched arm costs: loads
  that fetch and refactorise every arm against loads that fetch none (worker CPU, Redis CPU,
  bytes per arm);
- **Redis memory** (INFO used_memory deltas): per decision waiting for its reward, per
  tombstone (a settled decision), per segment with all K arms trained.

Prints a table and writes the Costs of banditd/sim/fleet.py per shape as JSON, which
`python simulations/scale.py --inputs FILE` reads. Numbers are this machine's, today.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from banditd.api.v1 import bandit_pb2 as pb
from banditd.config import Settings
from banditd.logs import configure_logging
from banditd.server.app import build_daemon
from banditd.server.service import RouterService
from banditd.state.redis_store import RedisModelStore
from banditd.types import ModelKey
from bench.grpc import _shape, start_daemon
from bench.launcher import ROOT, Process, cpu_seconds, run_client, start_redis
from bench.loadgen import POOL, requests
from bench.table import show

SHAPES = ((8, 4), (32, 16), (64, 64))
LOAD_RUNS = 5


def settings(url: str, dim: int, arms: int, prefix: str) -> Settings:
    return Settings(
        seed=1,
        log_level="error",
        server={"listen": "127.0.0.1:0", "metrics_listen": "", "admin_listen": "",
                "grace_s": 0, "sweep_interval_s": 3600},
        store={"backend": "redis", "redis": {"url": url, "key_prefix": prefix,
                                              "health_interval_s": 3600, "timeout_s": 5.0}},
        policies={"bench": {
            "arms": [f"a{i}" for i in range(arms)], "alpha": 0.5, "reward_wait_s": 3600,
            "features": {"numeric": [f"f{j}" for j in range(dim - 1)]},
        }},
    )  # fmt: skip


class _Replica:
    """One daemon's RouterService in this process, with its store's round trips counted."""

    def __init__(self, s: Settings) -> None:
        self.daemon = build_daemon(s)
        self.service = RouterService(self.daemon.router, self.daemon.metrics)
        store = self.daemon.store
        assert isinstance(store, RedisModelStore)
        self.store = store
        self.calls = 0
        inner = store.call

        async def counted(make: Any) -> Any:
            self.calls += 1
            return await inner(make)

        store.call = counted  # type: ignore[method-assign]


def _redis_cpu(r: redis.Redis) -> float:
    """redis-server's CPU seconds so far (INFO cpu: getrusage, to the microsecond; /proc counts
    in 10 ms ticks, too coarse for a few hundred round trips)."""
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _script_us(r: redis.Redis) -> float:
    """Redis's time inside scripts so far (INFO commandstats, EVALSHA), µs."""
    return float(r.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


async def _refetch(replica: _Replica, r: redis.Redis, arms: int, loads: int) -> dict[str, float]:
    """Per refetched arm: the worker's and Redis's CPU and the bytes of a load that fetches and
    refactorises every arm (the cached A⁻¹ were built with another λ, so none is current), over
    a load that fetches none."""
    store = replica.store
    spec = replica.daemon.router.specs()["bench"]
    other = dataclasses.replace(spec, l2=spec.l2 * (1 + 1e-9))
    key, ids = ModelKey("bench", ""), tuple(f"a{i}" for i in range(arms))

    async def per_load(refetch: bool) -> tuple[float, float, float]:
        await store.load(key, ids, spec)
        c0, r0, b0 = time.process_time(), _redis_cpu(r), store.stats.bytes_in
        for i in range(loads):
            await store.load(key, ids, other if refetch and i % 2 == 0 else spec)
        worker, server = time.process_time() - c0, _redis_cpu(r) - r0
        return 1e6 * worker / loads, 1e6 * server / loads, (store.stats.bytes_in - b0) / loads

    fetched0 = store.stats.refactorised
    w1, r1, b1 = await per_load(True)
    assert store.stats.refactorised - fetched0 >= loads * arms, "not every arm was refetched"
    w0, r0, b0 = await per_load(False)
    return {
        "refetch_worker_us": (w1 - w0) / arms,
        "refetch_redis_us": (r1 - r0) / arms,
        "refetch_bytes": (b1 - b0) / arms,
    }


async def _in_process(url: str, dim: int, arms: int, calls: int) -> dict[str, float]:
    prefix = f"scale-{dim}x{arms}"
    r = redis.Redis.from_url(url)
    r.flushdb()
    a, b = (_Replica(settings(url, dim, arms, prefix)) for _ in range(2))
    pool = requests(dim, arms)
    rnd = random.Random(5)
    out: dict[str, float] = {}

    async def rt(replica: _Replica, i: int, feedback: bool = True) -> tuple[float, float]:
        c0 = time.process_time()
        resp = await replica.service.Route(pool[i % POOL], None)  # type: ignore[arg-type]
        c1 = time.process_time()
        if feedback:
            request = pb.FeedbackRequest(decision_id=resp.decision_id, reward=rnd.random())
            await replica.service.Feedback(request, None)  # type: ignore[arg-type]
        return c1 - c0, time.process_time() - c1

    def redis_cpu() -> float:
        return _redis_cpu(r)

    for i in range(30 * arms):  # every arm trained; both caches warm
        await rt(a, i)
        await rt(b, i)
    await rt(a, 0)

    # one replica: round trips, worker CPU Route/Feedback, Redis CPU per rt, tombstone bytes
    mem0, cpu0, calls0 = int(r.info("memory")["used_memory"]), redis_cpu(), a.calls
    scripts0 = _script_us(r)
    route_s = feedback_s = 0.0
    for i in range(calls):
        dr, df = await rt(a, i)
        route_s, feedback_s = route_s + dr, feedback_s + df
    out["round_trips"] = (a.calls - calls0) / calls
    out["worker_route_us"] = 1e6 * route_s / calls
    out["worker_feedback_us"] = 1e6 * feedback_s / calls
    out["redis_rt_us"] = 1e6 * (redis_cpu() - cpu0) / calls
    out["redis_scripts_rt_us"] = (_script_us(r) - scripts0) / calls
    out["tombstone_bytes"] = (int(r.info("memory")["used_memory"]) - mem0) / calls

    # Routes alone: Redis CPU per Route, bytes per pending decision
    mem0, cpu0 = int(r.info("memory")["used_memory"]), redis_cpu()
    for i in range(calls):
        await rt(a, i, feedback=False)
    out["redis_route_us"] = 1e6 * (redis_cpu() - cpu0) / calls
    out["pending_bytes"] = (int(r.info("memory")["used_memory"]) - mem0) / calls
    await rt(b, 0)  # b's cache catches up with those (no updates: nothing to fetch)

    # two replicas taking turns: each Route refetches what the other changed
    fetches0, cpu0 = a.store.stats.fetches + b.store.stats.fetches, redis_cpu()
    refactorised0 = a.store.stats.refactorised + b.store.stats.refactorised
    worker_s = 0.0
    for i in range(calls):
        dr, df = await rt(a if i % 2 else b, i)
        worker_s += dr + df
    refetched = (a.store.stats.refactorised + b.store.stats.refactorised - refactorised0) / calls
    out["refetched_per_rt"] = refetched
    out["fetches_per_rt"] = (a.store.stats.fetches + b.store.stats.fetches - fetches0) / calls
    out["worker_two_replicas_us"] = 1e6 * worker_s / calls
    out["redis_two_replicas_us"] = 1e6 * (redis_cpu() - cpu0) / calls
    out.update(await _refetch(a, r, arms, max(50, calls // 10)))

    # segments: each arm trained once in new segments (one candidate per Route)
    segments = 20
    mem0 = int(r.info("memory")["used_memory"])
    for seg in range(segments):
        for arm in range(arms):
            request = pb.RouteRequest()
            request.CopyFrom(pool[arm])
            request.segment = f"seg{seg}"
            del request.candidates[:]
            request.candidates.add(id=f"a{arm}")
            resp = await a.service.Route(request, None)  # type: ignore[arg-type]
            fb = pb.FeedbackRequest(decision_id=resp.decision_id, reward=rnd.random())
            await a.service.Feedback(fb, None)  # type: ignore[arg-type]
    grown = int(r.info("memory")["used_memory"]) - mem0
    out["segment_bytes"] = grown / segments - arms * out["tombstone_bytes"]
    for replica in (a, b):
        await replica.store.close()
    r.close()
    return out


def _under_load(workdir: Path, url: str, dim: int, arms: int) -> dict[str, float]:
    """The whole worker (gRPC included) and Redis, CPU per rt, 64 Route+Feedback in flight."""
    daemon, address = start_daemon(workdir, dim, arms, "linucb", "redis", url)
    worker, server, rates = [], [], []
    r = redis.Redis.from_url(url)
    try:
        for _ in range(LOAD_RUNS):
            d0, r0 = cpu_seconds(daemon.proc.pid), _redis_cpu(r)
            run = run_client([
                "conc", "--target", address, "--dim", str(dim), "--arms", str(arms),
                "--inflight", "64", "--seconds", "2", "--warmup-seconds", "0.5",
            ])  # fmt: skip
            total = float(run["round_trips_total"])  # type: ignore[arg-type]
            worker.append(1e6 * (cpu_seconds(daemon.proc.pid) - d0) / total)
            server.append(1e6 * (_redis_cpu(r) - r0) / total)
            rates.append(float(run["round_trips_per_s"]))  # type: ignore[arg-type]
    finally:
        daemon.stop()
        r.close()
    return {
        "worker_us": statistics.median(worker),
        "worker_us_min": min(worker),
        "worker_us_max": max(worker),
        "redis_us": statistics.median(server),
        "loaded_rt_per_s": statistics.median(rates),
    }


def costs(load: dict[str, float], inproc: dict[str, float], dim: int, arms: int) -> dict[str, Any]:
    """banditd.sim.fleet.Costs fields from the measurements."""
    worker_in = inproc["worker_route_us"] + inproc["worker_feedback_us"]
    # Redis's CPU from the in-process runs, where redis-server has CPU0 to itself (under load
    # it shares that core with the daemon, which inflates both); one command in flight, so
    # each command pays its own wake-up: an upper bound for a shard under many clients.
    redis_route = min(inproc["redis_route_us"], inproc["redis_rt_us"])
    return {
        "dim": dim, "arms": arms,
        "worker_us": round(load["worker_us"], 1),
        "route_share": round(inproc["worker_route_us"] / worker_in, 3),
        "redis_route_us": round(redis_route, 1),
        "redis_feedback_us": round(inproc["redis_rt_us"] - redis_route, 1),
        "refetch_worker_us": round(max(0.0, inproc.get("refetch_worker_us", 0.0)), 1),
        "refetch_redis_us": round(max(0.0, inproc.get("refetch_redis_us", 0.0)), 1),
        "refetch_bytes": round(inproc.get("refetch_bytes", 0.0)),
        "route_trips": 2, "feedback_trips": 1,
        "segment_bytes": round(inproc["segment_bytes"]),
        "pending_bytes": round(inproc["pending_bytes"]),
        "tombstone_bytes": round(inproc["tombstone_bytes"]),
    }  # fmt: skip


def main(shapes: Sequence[tuple[int, int]] = SHAPES, calls: int = 2000, out: str = "") -> object:
    configure_logging("error")
    results: dict[str, Any] = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    rows = []
    target = Path(out) if out else ROOT / "out" / "scale-inputs.json"
    target.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        process: Process
        process, url = start_redis(workdir)
        try:
            for dim, arms in shapes:
                print(f"-- d={dim}, K={arms} --", flush=True)
                inproc = asyncio.run(_in_process(url, dim, arms, calls))
                load = _under_load(workdir, url, dim, arms)
                fields = costs(load, inproc, dim, arms)
                results[f"{dim}x{arms}"] = {
                    "costs": fields,
                    "under_load": load,
                    "in_process": inproc,
                }
                target.write_text(json.dumps(results, indent=1))  # after each shape
                rows.append({"shape": f"d={dim}, K={arms}", **{k: v for k, v in fields.items()
                             if k not in ("dim", "arms", "route_trips", "feedback_trips")},
                             "rt/s loaded": load["loaded_rt_per_s"],
                             "Redis round trips/rt": inproc["round_trips"],
                             "Redis in scripts µs/rt (1 in flight)": inproc["redis_scripts_rt_us"],
                             "Redis µs/rt (1 in flight)": inproc["redis_rt_us"],
                             "refetched/rt (2 replicas)": inproc["refetched_per_rt"]})  # fmt: skip
        finally:
            process.stop()
    show(rows, "fleet-plan inputs (µs of one core per Route+Feedback; bytes)")
    print(f"  written to {target}")
    return results


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_inputs", description=__doc__)
    parser.add_argument(
        "--shape", type=_shape, action="append", help="DxK (default 8x4 32x16 64x64)"
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    main(args.shape or SHAPES, args.calls, args.out)


if __name__ == "__main__":
    cli()
