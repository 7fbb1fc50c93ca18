"""What one Route costs on the Redis backend: round trips and bytes, counted by Redis itself.

`python -m tests.integration.route_cost` prints a table (docs/redis.md quotes it); the test in
test_redis_route_cost.py asserts the round-trip counts.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
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
from banditd.state.redis_store import RedisModelStore

ARMS = ("a", "b", "c")


@dataclass(frozen=True)
class Cost:
    features: int  # context vector dim d = features + 1 (bias)
    feedback: bool  # a Feedback after every Route (so one arm changes between Routes)
    routes: int
    round_trips: int  # calls the store made (each one command, one round trip)
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


def settings(url: str, features: int) -> Settings:
    names = [f"x{i}" for i in range(features)]
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
        store={"backend": "redis", "redis": {"url": url, "health_interval_s": 3600}},  # type: ignore[arg-type]
        policies={"chat": {"arms": list(ARMS), "features": {"numeric": names}}},  # type: ignore[dict-item]
    )


async def measure(url: str, features: int, feedback: bool, routes: int = 200) -> Cost:
    client = aioredis.from_url(url)
    await client.flushdb()
    daemon = build_daemon(settings(url, features))
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
            calls = 0
            for _ in range(routes):
                await one(feedback)
            round_trips = calls  # before stop(): its final expiry sweep is not a Route's cost
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


async def main() -> None:
    import logging

    import structlog

    from tests.integration.conftest import start_redis

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(Path(tmp))
        url = f"redis://127.0.0.1:{port}/0"
        try:
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
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
