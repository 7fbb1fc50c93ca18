"""The client side of bench/grpc.py, run as its own (pinned) process; prints one JSON object.

    python -m bench.loadgen seq   --target ADDR --dim D --arms K --calls N
    python -m bench.loadgen conc  --target ADDR --dim D --arms K --inflight M --seconds S
    python -m bench.loadgen redis --url redis://127.0.0.1:PORT/0 --calls N
    (seq, conc: --tls-ca CA.crt for a TLS channel; with --tls-cert/--tls-key, mTLS)

One round trip = Route then Feedback on the decision it returned (two unary RPCs).
seq:   a blocking grpc client, one round trip at a time: latency percentiles, round trips/s.
conc:  a grpc.aio client on one channel, M workers each looping round trips: round trips/s over
       the measured window (after a warm-up), and the latency each round trip saw under load
       (and its Route alone). With --connections C > 1, C channels each on a TCP connection
       of its own, worker i on channel i mod C: the kernel spreads connections over the
       processes that share a port (SO_REUSEPORT), and one connection reaches one of them.
       With --batch B > 1 the rewards go in FeedbackBatch calls of B (a worker whose Route
       fills a batch sends it); a round trip counts when its reward is acknowledged, and the
       latency is the Route's alone.
redis: bare redis-py round trips (GET/SET of 64 B and of one d=32 arm state, EVALSHA).
handler: the daemon's own servicer (RouterService.Route + Feedback) called in-process on
       deserialised requests, no gRPC: what the daemon adds on top of the echo's work. With
       --evict-mb M > 0, M MB of unrelated memory is swept between round trips (as gRPC's core
       and the event loop do between a server's handler calls) and each round trip is timed
       alone: the handler's cost with cold caches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc

POOL = 256  # distinct requests cycled through (contexts differ; candidates are the same)


def requests(dim: int, arms: int, policy: str = "bench", seed: int = 1) -> list[pb.RouteRequest]:
    """Route requests with d−1 numeric features (the daemon adds the bias) and K candidates."""
    rnd = random.Random(seed)
    candidates = [pb.Candidate(id=f"a{i}") for i in range(arms)]
    return [
        pb.RouteRequest(
            policy=policy,
            context=pb.Context(features={f"f{j}": rnd.gauss(0, 1) for j in range(dim - 1)}),
            candidates=candidates,
        )
        for _ in range(POOL)
    ]


def credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials | None:
    """TLS channel credentials trusting `ca` (with a client certificate if given); None for
    plaintext (no `ca`)."""
    if not ca:
        return None
    chain = Path(cert).read_bytes() if cert else None
    private = Path(key).read_bytes() if key else None
    return grpc.ssl_channel_credentials(Path(ca).read_bytes(), private, chain)


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    if not samples_s:
        return {"p50_us": float("nan"), "p99_us": float("nan")}
    ordered = sorted(samples_s)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered
    return {"p50_us": 1e6 * statistics.median(ordered), "p99_us": 1e6 * q[min(98, len(q) - 1)]}


def sequential(
    target: str,
    dim: int,
    arms: int,
    calls: int,
    warmup: int,
    secure: grpc.ChannelCredentials | None = None,
) -> dict[str, object]:
    pool = requests(dim, arms)
    rnd = random.Random(2)
    opened = grpc.secure_channel(target, secure) if secure else grpc.insecure_channel(target)
    with opened as channel:
        stub = pb_grpc.RouterStub(channel)  # type: ignore[no-untyped-call]
        route_s: list[float] = []
        feedback_s: list[float] = []
        pair_s: list[float] = []
        start = 0.0
        for i in range(warmup + calls):
            if i == warmup:
                start = time.perf_counter()
            t0 = time.perf_counter()
            response = stub.Route(pool[i % POOL], timeout=10)
            t1 = time.perf_counter()
            stub.Feedback(
                pb.FeedbackRequest(decision_id=response.decision_id, reward=rnd.random()),
                timeout=10,
            )
            t2 = time.perf_counter()
            if i >= warmup:
                route_s.append(t1 - t0)
                feedback_s.append(t2 - t1)
                pair_s.append(t2 - t0)
        elapsed = time.perf_counter() - start
    return {
        "round_trips_per_s": calls / elapsed,
        "round_trips": calls,
        "round_trips_total": warmup + calls,
        "pair": percentiles(pair_s),
        "route": percentiles(route_s),
        "feedback": percentiles(feedback_s),
    }


async def concurrent(
    target: str,
    dim: int,
    arms: int,
    inflight: int,
    seconds: float,
    warmup_s: float,
    batch: int = 1,
    secure: grpc.ChannelCredentials | None = None,
    connections: int = 1,
) -> dict[str, object]:
    pool = requests(dim, arms)
    rnd = random.Random(3)
    latencies: list[float] = []
    route_latencies: list[float] = []
    done = 0
    failed = 0  # batch mode: reward items the server answered with an error code
    total = 0  # every completed round trip, warm-up included (for server CPU per round trip)
    measuring = False
    stop = False
    unrewarded: list[pb.FeedbackRequest] = []  # batch mode: rewards waiting for their batch

    async def worker(offset: int, stub: pb_grpc.RouterStub) -> None:
        nonlocal done, total, failed
        i = offset
        while not stop:
            t0 = time.perf_counter()
            response = await stub.Route(pool[i % POOL], timeout=10)
            if measuring:
                route_latencies.append(time.perf_counter() - t0)
            reward = pb.FeedbackRequest(decision_id=response.decision_id, reward=rnd.random())
            i += inflight
            if batch == 1:
                await stub.Feedback(reward, timeout=10)
                acknowledged = 1
            else:
                if measuring:
                    latencies.append(time.perf_counter() - t0)
                unrewarded.append(reward)
                if len(unrewarded) < batch:
                    continue
                items = unrewarded[:batch]
                del unrewarded[:batch]
                reply = await stub.FeedbackBatch(pb.FeedbackBatchRequest(items=items), timeout=10)
                # Only applied rewards make a round trip: an item answered with an error
                # (UNAVAILABLE while the store fails fast, say) is counted apart, not as done.
                acknowledged = sum(1 for r in reply.results if r.code == 0)
                if measuring:
                    failed += batch - acknowledged
            total += acknowledged
            if measuring:
                if batch == 1:
                    latencies.append(time.perf_counter() - t0)
                done += acknowledged

    # Channels in one process share grpc's global subchannel pool (one connection per target)
    # unless each has a pool of its own.
    options = [("grpc.use_local_subchannel_pool", 1)] if connections > 1 else []
    channels = [
        grpc.aio.secure_channel(target, secure, options)
        if secure
        else grpc.aio.insecure_channel(target, options)
        for _ in range(connections)
    ]
    try:
        stubs = [pb_grpc.RouterStub(c) for c in channels]  # type: ignore[no-untyped-call]
        cpu0 = time.process_time()
        tasks = [asyncio.create_task(worker(i, stubs[i % connections])) for i in range(inflight)]
        await asyncio.sleep(warmup_s)
        measuring = True
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        measuring = False
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        stop = True
        await asyncio.gather(*tasks)
        cpu_total = time.process_time() - cpu0
    finally:
        for c in channels:
            await c.close()
    return {
        "route": percentiles(route_latencies),
        "connections": connections,
        "client_cpu_share": cpu / elapsed,  # CPUs the load generator used while measuring
        "client_cpu_s_total": cpu_total,
        "round_trips_per_s": done / elapsed,
        "round_trips": done,
        "round_trips_total": total,
        "inflight": inflight,
        "batch": batch,
        "failed_items": failed,
        "pair": percentiles(latencies),
    }


def redis_round_trips(url: str, calls: int, warmup: int, dim: int) -> dict[str, object]:
    import redis

    client = redis.Redis.from_url(url)
    small = b"x" * 64
    blob = bytes(8 * dim * dim)  # one arm's A⁻¹ as float64
    client.set("bench:small", small)
    client.set("bench:blob", blob)
    sha = client.script_load("return redis.call('GET', KEYS[1])")
    ops: dict[str, Callable[[], object]] = {
        "PING": lambda: client.ping(),
        "GET 64 B": lambda: client.get("bench:small"),
        "SET 64 B": lambda: client.set("bench:small", small),
        f"GET {len(blob):,} B (one d={dim} state)": lambda: client.get("bench:blob"),
        f"SET {len(blob):,} B (one d={dim} state)": lambda: client.set("bench:blob", blob),
        "EVALSHA (GET in Lua)": lambda: client.evalsha(sha, 1, "bench:small"),
    }
    out: dict[str, object] = {}
    for name, op in ops.items():
        for _ in range(warmup):
            op()
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            op()
            samples.append(time.perf_counter() - t0)
        out[name] = percentiles(samples)
    client.delete("bench:small", "bench:blob")
    client.close()
    return out


def handler(
    config: str, dim: int, arms: int, calls: int, chunks: int, evict_mb: float = 0.0
) -> dict[str, object]:
    """µs per Route+Feedback through RouterService in-process (wall and CPU), over chunks."""
    from banditd.config import load_settings
    from banditd.logs import configure_logging
    from banditd.server.app import build_daemon
    from banditd.server.service import RouterService

    settings = load_settings(Path(config))
    configure_logging(settings.log_level, settings.log_format)
    daemon = build_daemon(settings)
    service = RouterService(daemon.router, daemon.metrics)
    pool = requests(dim, arms)
    rnd = random.Random(4)

    async def run() -> tuple[list[float], list[float]]:
        per_pair, cpu_per_pair = [], []
        for chunk in range(chunks + 1):  # chunk 0 is the warm-up
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(calls):
                response = await service.Route(pool[i % POOL], None)  # type: ignore[arg-type]
                feedback = pb.FeedbackRequest(decision_id=response.decision_id, reward=rnd.random())
                await service.Feedback(feedback, None)  # type: ignore[arg-type]
            if chunk:
                per_pair.append((time.perf_counter() - start) / calls)
                cpu_per_pair.append((time.process_time() - cpu) / calls)
        return per_pair, cpu_per_pair

    if evict_mb > 0:
        return _cold_handler(service, pool, rnd, calls * chunks, evict_mb)
    per_pair, cpu_per_pair = asyncio.run(run())
    return {
        "pair_us": 1e6 * statistics.median(per_pair),
        "pair_us_min": 1e6 * min(per_pair),
        "pair_cpu_us": 1e6 * statistics.median(cpu_per_pair),
        "chunks": chunks,
        "calls_per_chunk": calls,
    }


def _cold_handler(
    service: object, pool: list[pb.RouteRequest], rnd: random.Random, calls: int, evict_mb: float
) -> dict[str, object]:
    """Each round trip timed alone, after sweeping `evict_mb` MB of other memory."""
    import numpy as np

    sweep = np.ones(max(1, int(evict_mb * 2**20 / 8)))
    objects = [{"i": i} for i in range(int(evict_mb * 2**20 / 256))]  # Python objects too

    async def run(n: int) -> tuple[list[float], list[float]]:
        wall, cpu = [], []
        for i in range(n):
            sweep.sum()
            for obj in objects[::4]:
                obj.get("i")
            t0, c0 = time.perf_counter(), time.process_time()
            response = await service.Route(pool[i % POOL], None)  # type: ignore[attr-defined]
            feedback = pb.FeedbackRequest(decision_id=response.decision_id, reward=rnd.random())
            await service.Feedback(feedback, None)  # type: ignore[attr-defined]
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return wall, cpu

    async def both() -> tuple[list[float], list[float]]:  # one loop: a Redis client is bound
        await run(POOL)  # warm-up: every request seen once
        return await run(calls)

    wall, cpu = asyncio.run(both())
    return {
        "pair_us": 1e6 * statistics.median(wall),
        "pair_cpu_us": 1e6 * statistics.median(cpu),
        "evict_mb": evict_mb,
        "calls": calls,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("mode", choices=("seq", "conc", "redis", "handler"))
    parser.add_argument("--target", default="")
    parser.add_argument("--url", default="")
    parser.add_argument("--config", default="", help="daemon TOML (handler mode)")
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--evict-mb", type=float, default=0.0, help="handler: cold caches")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--arms", type=int, default=16)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1, help="conc: rewards per FeedbackBatch")
    parser.add_argument("--connections", type=int, default=1, help="conc: TCP connections")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup-seconds", type=float, default=0.5)
    parser.add_argument("--tls-ca", default="", help="seq, conc: TLS, trusting this CA (PEM)")
    parser.add_argument("--tls-cert", default="", help="with --tls-ca: client certificate (mTLS)")
    parser.add_argument("--tls-key", default="", help="the client certificate's key")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_cert and not args.tls_ca):
        parser.error("--tls-cert and --tls-key go together, and with --tls-ca")
    secure = credentials(args.tls_ca, args.tls_cert, args.tls_key)
    if args.mode == "seq":
        result = sequential(args.target, args.dim, args.arms, args.calls, args.warmup, secure)
    elif args.mode == "conc":
        result = asyncio.run(
            concurrent(
                args.target,
                args.dim,
                args.arms,
                args.inflight,
                args.seconds,
                args.warmup_seconds,
                args.batch,
                secure,
                args.connections,
            )
        )
    elif args.mode == "handler":
        result = handler(args.config, args.dim, args.arms, args.calls, args.chunks, args.evict_mb)
    else:
        result = redis_round_trips(args.url, args.calls, args.warmup, args.dim)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
