"""What one Route costs on the Redis backend: round trips and bytes, counted by Redis itself.

`python -m tests.integration.route_cost` prints two tables (docs/redis.md quotes them):
- one Route (or Route+Feedback) at a time over gRPC: round trips, bytes, Redis's script CPU;
- under load: `inflight` concurrent Route+Feedback calls into the daemon's RouterService
  in-process (no gRPC, so the daemon's CPU is its handlers and its Redis client), with
  coalescing on and off: per Route+Feedback, the round trips Redis saw (its read events,
  `total_reads_processed`), the commands it ran (top level, not those inside scripts), the
  network writes the store made (pipelines sent, or calls without coalescing), Redis's whole
  CPU (`used_cpu_user + used_cpu_sys`) and the daemon's.
The test in test_redis_route_cost.py asserts the round-trip counts.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import Settings
from banditd.server.app import build_daemon
from banditd.state import keys
from banditd.state.redis_store import RedisModelStore, RedisStoreParams

ARMS = ("a", "b", "c")


@dataclass(frozen=True)
class Cost:
    features: int  # context vector dim d = features + 1 (bias)
    feedback: bool  # a Feedback after every Route (so one arm changes between Routes)
    routes: int
    round_trips: int  # network writes the store made: pooled calls + coalesced pipelines
    commands: dict[str, int]  # Redis commandstats: calls, including those run inside Lua
    bytes_in: int  # client -> Redis
    bytes_out: int  # Redis -> client
    state_bytes: int  # all arms' sums blobs: what a fetch-everything Route would move
    redis_usec: int = 0  # Redis's own CPU time in the scripts (commandstats), all routes

    def per_route(self) -> dict[str, float]:
        n = self.routes
        return {
            "round_trips": self.round_trips / n,
            "bytes_to_redis": self.bytes_in / n,
            "bytes_from_redis": self.bytes_out / n,
            "redis_cpu_us": self.redis_usec / n,
        }


def settings(
    url: str,
    features: int,
    coalesce: bool | None = None,
    arms: tuple[str, ...] = ARMS,
    backend: str = "redis",
) -> Settings:
    names = [f"x{i}" for i in range(features)]
    # timeout_s: a loaded 2-vCPU machine can hold a pooled call longer than the default 0.25 s
    redis: dict[str, object] = {"url": url, "health_interval_s": 3600, "timeout_s": 2.0}
    if coalesce is not None:
        redis["coalesce"] = coalesce
    return Settings(
        seed=1,
        log_level="error",
        # no expiry sweeps inside the measured window: they are not part of a Route
        server={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "admin_listen": "",
            "grace_s": 0,
            "sweep_interval_s": 3600,
        },  # type: ignore[arg-type]
        store={"backend": backend, "redis": redis},  # type: ignore[arg-type]
        policies={"chat": {"arms": list(arms), "features": {"numeric": names}}},  # type: ignore[dict-item]
    )


async def measure(
    url: str, features: int, feedback: bool, routes: int = 200, coalesce: bool | None = None
) -> Cost:
    client = aioredis.from_url(url)
    await client.flushdb()
    daemon = build_daemon(settings(url, features, coalesce))
    await daemon.start()
    rnd = random.Random(0)
    store = daemon.store
    assert isinstance(store, RedisModelStore)
    calls = 0
    inner = store.call

    async def counted(make: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal calls
        calls += 1
        return await inner(make)

    store.call = counted  # type: ignore[method-assign]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.RouterStub(channel)

            async def one(send_feedback: bool) -> None:
                ctx = pb.Context(features={f"x{i}": rnd.random() for i in range(features)})
                resp = await stub.Route(pb.RouteRequest(
                    policy="chat", context=ctx, candidates=[pb.Candidate(id=a) for a in ARMS]
                ))  # fmt: skip
                if send_feedback:
                    await stub.Feedback(
                        pb.FeedbackRequest(decision_id=resp.decision_id, reward=rnd.random())
                    )

            for _ in range(30):  # every arm has state, every cache is warm
                await one(True)
            await one(False)
            await client.config_resetstat()
            calls, flushes = 0, store.stats.flushes
            for _ in range(routes):
                await one(feedback)
            # before stop(): its final expiry sweep is not a Route's cost
            round_trips = calls + store.stats.flushes - flushes
            stats = await client.info("commandstats")
            net = await client.info("stats")
            blobs = await client.hgetall(keys.Keys().sums(keys.Keys().segment_slot("chat", "")))
    finally:
        await daemon.stop(grace_s=0)
        await client.aclose()
    commands = {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_info")
    }
    state_bytes = sum(len(b) for b in blobs.values())
    bytes_in, bytes_out = int(net["total_net_input_bytes"]), int(net["total_net_output_bytes"])
    usec = int(stats.get("cmdstat_evalsha", {}).get("usec", 0))
    return Cost(features, feedback, routes, round_trips, commands, bytes_in, bytes_out,
                state_bytes, usec)  # fmt: skip


@dataclass(frozen=True)
class LoadCost:
    """Route+Feedback under load, in-process; totals over `pairs` round trips."""

    features: int
    arms: int
    inflight: int
    coalesce: bool | str | None  # "memory": the in-memory store
    pairs: int
    reads: int  # read events Redis processed on client sockets: the round trips it saw
    scripts: int  # script calls Redis ran (EVALSHA, EVAL)
    writes: int  # network writes the store made: pipelines sent, or calls (not coalescing)
    redis_cpu_s: float  # Redis's user + system CPU
    script_us: int  # of which in the scripts (commandstats)
    bytes_out: int  # Redis -> clients
    daemon_cpu_s: float  # this process's CPU (handlers + Redis client + the loop)
    seconds: float
    latency_us: tuple[float, float]  # Route+Feedback p50, p99

    def per_pair(self) -> dict[str, float]:
        n = self.pairs
        return {
            "round_trips": self.reads / n,
            "scripts": self.scripts / n,
            "writes": self.writes / n,
            "redis_cpu_us": 1e6 * self.redis_cpu_s / n,
            "script_us": self.script_us / n,
            "bytes_out": self.bytes_out / n,
            "daemon_cpu_us": 1e6 * self.daemon_cpu_s / n,
            "pairs_per_s": n / self.seconds,
        }


async def _redis_counters(client: aioredis.Redis) -> tuple[int, int, float, int, int]:
    """Read events, script calls (EVALSHA or EVAL: the commands inside a script are counted
    apart by Redis, so its total_commands_processed says little here), CPU seconds, the
    scripts' own CPU µs (commandstats) and bytes sent to clients."""
    stats = await client.info("stats")
    commands = await client.info("commandstats")
    cpu = await client.info("cpu")
    scripts = [commands.get(f"cmdstat_{name}", {}) for name in ("evalsha", "eval")]
    return (
        int(stats["total_reads_processed"]),
        sum(int(s.get("calls", 0)) for s in scripts),
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        sum(int(s.get("usec", 0)) for s in scripts),
        int(stats["total_net_output_bytes"]),
    )


async def measure_load(
    url: str,
    features: int,
    arms: int = 16,
    inflight: int = 64,
    pairs: int = 3000,
    coalesce: bool | None = None,
    backend: str = "redis",
) -> LoadCost:
    """`inflight` workers each loop Route then Feedback through the daemon's RouterService
    in-process (no gRPC, no server started) until `pairs` round trips are done. With
    backend="memory", the same on the in-memory store (the Redis columns are then 0)."""
    from banditd.server.service import RouterService

    client = aioredis.from_url(url)
    await client.flushdb()
    ids = tuple(f"a{i}" for i in range(arms))
    daemon = build_daemon(settings(url, features, coalesce, ids, backend))
    store = daemon.store
    memory = not isinstance(store, RedisModelStore)
    if memory:  # a stand-in with the counters the Redis store has
        store = RedisModelStore(client, RedisStoreParams(coalesce=False))
    service = RouterService(daemon.router, daemon.metrics)
    rnd = random.Random(0)
    requests = [
        pb.RouteRequest(
            policy="chat",
            context=pb.Context(features={f"x{i}": rnd.gauss(0, 1) for i in range(features)}),
            candidates=[pb.Candidate(id=a) for a in ids],
        )
        for _ in range(256)
    ]
    calls = 0
    inner = store.call

    async def counted(make: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal calls
        calls += 1
        return await inner(make)

    store.call = counted  # type: ignore[method-assign]
    latencies: list[float] = []

    async def run(total: int) -> None:
        left = total

        async def worker(offset: int) -> None:
            nonlocal left
            i = offset
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                resp = await service.Route(requests[i % len(requests)], None)  # type: ignore[arg-type]
                reward = pb.FeedbackRequest(decision_id=resp.decision_id, reward=rnd.random())
                await service.Feedback(reward, None)  # type: ignore[arg-type]
                latencies.append(time.perf_counter() - t0)
                i += inflight

        await asyncio.gather(*(worker(i) for i in range(inflight)))

    try:
        if not memory:
            await store.ping()
        await run(max(pairs // 4, 4 * inflight))  # warm: every arm learned, caches hot
        latencies.clear()
        flushes, calls = store.stats.flushes, 0
        before = await _redis_counters(client)
        wall, cpu = time.perf_counter(), time.process_time()
        await run(pairs)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = await _redis_counters(client)
        writes = calls + store.stats.flushes - flushes
    finally:
        await store.close()  # (closes `client` too when it stood in for the memory store)
        await client.aclose()
    ordered = sorted(latencies)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98]
    return LoadCost(
        features + 1, arms, inflight, "memory" if memory else coalesce, pairs,
        after[0] - before[0] - 3, after[1] - before[1],  # (less the three INFO calls)
        writes, after[2] - before[2], after[3] - before[3], after[4] - before[4], cpu, wall,
        (1e6 * statistics.median(ordered), 1e6 * p99),
    )  # fmt: skip


def show_load(rows: list[LoadCost]) -> None:
    print("\nunder load: Route+Feedback in-process (RouterService, no gRPC), per Route+Feedback")
    print(
        "d   K   in flight  coalesce  round trips   scripts  writes  Redis CPU µs (scripts)"
        "  bytes<-Redis  daemon CPU µs     rt/s  p50 µs   p99 µs"
    )
    for c in rows:
        p = c.per_pair()
        mode = {None: "default", True: "on", False: "off", "memory": "(memory)"}[c.coalesce]
        print(f"{c.features:<4}{c.arms:<4}{c.inflight:>9}  {mode:>8}{p['round_trips']:>13.2f}"
              f"{p['scripts']:>10.2f}{p['writes']:>8.2f}{p['redis_cpu_us']:>14.1f}"
              f"{p['script_us']:>10.1f}{p['bytes_out']:>14.0f}{p['daemon_cpu_us']:>15.0f}{p['pairs_per_s']:>9.0f}{c.latency_us[0]:>8.0f}"
              f"{c.latency_us[1]:>9.0f}")  # fmt: skip


async def main(argv: list[str] | None = None) -> None:
    import argparse
    import logging

    import structlog

    from tests.integration.conftest import start_redis

    parser = argparse.ArgumentParser(prog="python -m tests.integration.route_cost")
    parser.add_argument("--pairs", type=int, default=3000, help="Route+Feedback under load")
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="load runs per mode, alternating")
    parser.add_argument("--load-only", action="store_true", help="skip the sequential table")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(Path(tmp))
        url = f"redis://127.0.0.1:{port}/0"
        try:
            if not args.load_only:
                print("d   per      round trips  bytes->redis  bytes<-redis  redis CPU µs"
                      "  | all 3 arms' sums")  # fmt: skip
                for features in (2, 15, 31, 63):
                    for feedback in (False, True):
                        c = await measure(url, features, feedback)
                        p = c.per_route()
                        what = "Route+Feedback" if feedback else "Route"
                        print(f"{features + 1:<4}{what:<15}{p['round_trips']:>6.2f}"
                              f"{p['bytes_to_redis']:>14.0f}{p['bytes_from_redis']:>14.0f}"
                              f"{p['redis_cpu_us']:>14.1f}  | {c.state_bytes:>8} B")  # fmt: skip
            rows = [
                await measure_load(url, 31, 16, args.inflight, args.pairs, coalesce, backend)
                for _ in range(args.repeats)
                for backend, coalesce in LOAD_MODES
            ]
            show_load(rows)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# (store.backend, store.redis.coalesce), alternating; the memory store for reference
LOAD_MODES = (("memory", None), ("redis", False), ("redis", True))

if __name__ == "__main__":
    asyncio.run(main())
