"""How one policy's Redis work spreads over a Cluster's masters: `python -m
tests.integration.cluster_spread` prints a table (docs/redis.md quotes it).

A 3-master cluster on free loopback ports and one in-process daemon; per case, Route+Feedback
round trips of the policy "chat" (d = 3, 16 in flight) over its segments, then each master's
Redis CPU (INFO commandstats, all commands) and script calls. Cases: one segment (all its keys
in one slot: one master does the work, as every policy did before segment tags), three
segments chosen to land on the three masters, and twelve segments by name only.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import grpc
import redis.asyncio as aioredis

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import build_daemon
from tests.integration.test_redis_cluster import (
    flush,
    owners,
    running_cluster,
    segments_on_every_shard,
)
from tests.integration.traffic import ARMS, redis_daemon_settings

ROUNDS = 1200
IN_FLIGHT = 16


async def masters(url: str) -> list[int]:
    return sorted(set((await owners(url)).values()))


async def cpu(port: int) -> tuple[int, int]:
    """(µs of Redis CPU in all commands, script calls) since the last CONFIG RESETSTAT."""
    client = aioredis.from_url(f"redis://127.0.0.1:{port}")
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    usec = sum(int(v["usec"]) for k, v in stats.items() if k.removeprefix("cmdstat_")
               not in ("info", "config|resetstat", "cluster|nodes", "cluster|slots"))  # fmt: skip
    scripts = sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_evalsha"))
    return usec, scripts


async def run(url: str, segments: list[str]) -> list[tuple[int, int, int]]:
    """Per master: (port, Redis µs, script calls) for ROUNDS Route+Feedback over segments."""
    await flush(url)
    daemon = build_daemon(redis_daemon_settings(url, cluster=True))  # type: ignore[arg-type]
    await daemon.start()
    ports = await masters(url)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}")
    stub = pb_grpc.RouterStub(channel)
    rnd = random.Random(1)

    async def one(i: int) -> None:
        features = {"x1": rnd.choice((-1.0, 0.5, 1.0)), "x2": rnd.choice((-0.5, 1.0))}
        req = pb.RouteRequest(policy="chat", segment=segments[i % len(segments)],
                              context=pb.Context(features=features),
                              candidates=[pb.Candidate(id=a) for a in ARMS])  # fmt: skip
        resp = await stub.Route(req, timeout=10)
        await stub.Feedback(pb.FeedbackRequest(decision_id=resp.decision_id, reward=0.5))

    async def rounds(start: int, n: int) -> None:
        for base in range(start, start + n, IN_FLIGHT):
            await asyncio.gather(*(one(i) for i in range(base, base + IN_FLIGHT)))

    try:
        await rounds(0, 10 * IN_FLIGHT)  # warm: every segment registered, every cache filled
        for port in ports:
            client = aioredis.from_url(f"redis://127.0.0.1:{port}")
            await client.config_resetstat()
            await client.aclose()
        await rounds(0, ROUNDS)
        return [(port, *(await cpu(port))) for port in ports]
    finally:
        await channel.close()
        await daemon.stop(grace_s=0)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:

        def mkdir(name: str) -> Path:
            (Path(tmp) / name).mkdir()
            return Path(tmp) / name

        with running_cluster(mkdir) as url:
            placed = sorted(await segments_on_every_shard(url))
            cases = {"1 segment": ["only"], f"3 segments {placed}": placed,
                     "12 segments tenant-0..11": [f"tenant-{i}" for i in range(12)]}  # fmt: skip
            print(f"{ROUNDS} Route+Feedback of one policy, {IN_FLIGHT} in flight, 3 masters")
            print(
                f"{'case':48s} {'Redis µs per Route+Feedback by master':40s} share of the busiest"
            )
            for name, segments in cases.items():
                per = await run(url, segments)
                total = sum(u for _, u, _ in per)
                cells = "  ".join(f"{u / ROUNDS:6.1f}" for _, u, _ in per)
                print(f"{name:48s} {cells:40s} {max(u for _, u, _ in per) / total:.2f}")


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main())
