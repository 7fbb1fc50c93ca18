"""Health under a Redis outage: only the learning path goes out of service.

Before, a Redis outage turned both "" (the liveness probe) and banditd.v1.Router (readiness)
NOT_SERVING: every replica's banditd was restarted after ~30 s, and every gateway pod left the
Service, although Route still answered (degraded).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import Settings
from banditd.server.app import Daemon, build_daemon
from tests.conftest import FakeClock
from tests.integration.conftest import daemon_settings, start_redis

LIVENESS, READINESS, LEARNING = "", "banditd.v1.Router", "banditd.v1.Learning"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ROUTE = pb.RouteRequest(
    policy="chat",
    context=pb.Context(features={"x1": 0.5, "x2": -1.0}),
    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
)


def redis_settings(port: int, **server: object) -> Settings:
    return daemon_settings(
        server={"listen": "127.0.0.1:0", "metrics_listen": "", "admin_listen": "", "grace_s": 1.0,
                **server},
        store={
            "backend": "redis",
            # 2 s: a killed Redis refuses at once; a slow machine must not look like an outage
            "redis": {"url": f"redis://127.0.0.1:{port}/0", "timeout_s": 2.0,
                      "health_interval_s": 0.05},
        },
    )  # fmt: skip


async def status(health: health_pb2_grpc.HealthStub, service: str) -> int:
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def wait_for_status(
    health: health_pb2_grpc.HealthStub, service: str, want: int, timeout_s: float = 30.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (got := await status(health, service)) != want:
        assert asyncio.get_running_loop().time() < deadline, f"{service!r} stayed {got}"
        await asyncio.sleep(0.05)


class Watches:
    """Every status a health Watch stream delivers, per service name, while open."""

    def __init__(self, health: health_pb2_grpc.HealthStub, services: tuple[str, ...]) -> None:
        self.seen: dict[str, list[int]] = {s: [] for s in services}
        self._calls = {s: health.Watch(health_pb2.HealthCheckRequest(service=s)) for s in services}
        self._tasks = [asyncio.create_task(self._follow(s)) for s in services]

    async def _follow(self, service: str) -> None:
        async for reply in self._calls[service]:
            self.seen[service].append(int(reply.status))

    async def close(self) -> None:
        for call in self._calls.values():
            call.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def redis_daemon(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Daemon, Callable[[], None], Callable[[], None]]]:
    """An in-process daemon on its own redis-server, with kill() and restart() for that Redis."""
    server = getattr(request, "param", {})
    procs = [start_redis(tmp_path)]
    port = procs[0][1]

    def kill() -> None:
        procs[-1][0].send_signal(signal.SIGKILL)
        procs[-1][0].wait(timeout=10)

    def restart() -> None:
        procs.append(start_redis(tmp_path, port=port))

    daemon = None
    try:  # a Redis must not outlive a daemon that failed to build or start
        daemon = build_daemon(redis_settings(port, **server))
        await daemon.start()
        yield daemon, kill, restart
    finally:
        if daemon is not None:
            await daemon.stop(grace_s=0)
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


async def test_redis_outage_takes_only_the_learning_path_out_of_service(
    redis_daemon: tuple[Daemon, Callable[[], None], Callable[[], None]],
) -> None:
    """Redis killed: "" and banditd.v1.Router stay SERVING, banditd.v1.Learning goes NOT_SERVING,
    Route answers degraded; Redis back: Learning SERVING again, and nothing else ever moved."""
    daemon, kill, restart = redis_daemon
    sample = daemon.metrics.registry.get_sample_value
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        router = pb_grpc.RouterStub(channel)
        watches = Watches(health, (LIVENESS, READINESS))
        try:
            await wait_until(lambda: all(watches.seen.values()))
            assert await status(health, LEARNING) == SERVING
            assert sample("banditd_store_up") == 1
            assert not (await router.Route(ROUTE, timeout=10)).degraded

            kill()
            await wait_for_status(health, LEARNING, NOT_SERVING)
            assert await status(health, LIVENESS) == SERVING
            assert await status(health, READINESS) == SERVING
            during = await router.Route(ROUTE, timeout=10)
            assert during.degraded
            await wait_until(lambda: sample("banditd_outage_buffered") == 1)
            assert sample("banditd_store_up") == 0
            assert sample("banditd_serving") == 1

            restart()
            await wait_for_status(health, LEARNING, SERVING)
            await wait_until(lambda: sample("banditd_outage_buffered") == 0)  # flushed to Redis
            assert sample("banditd_store_up") == 1
            feedback = pb.FeedbackRequest(decision_id=during.decision_id, reward=1.0)
            reply = await router.Feedback(feedback, timeout=10)
            assert reply.status == pb.FEEDBACK_STATUS_APPLIED
            assert await status(health, LIVENESS) == SERVING
            assert await status(health, READINESS) == SERVING
        finally:
            await watches.close()
    assert watches.seen == {LIVENESS: [SERVING], READINESS: [SERVING]}


@pytest.mark.parametrize("redis_daemon", [{"readiness_requires_store": True}], indirect=True)
async def test_readiness_follows_redis_when_the_operator_opts_in(
    redis_daemon: tuple[Daemon, Callable[[], None], Callable[[], None]],
) -> None:
    """server.readiness_requires_store: readiness goes NOT_SERVING with Redis and comes back;
    liveness still never moves."""
    daemon, kill, restart = redis_daemon
    sample = daemon.metrics.registry.get_sample_value
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = Watches(health, (LIVENESS,))
        try:
            await wait_until(lambda: all(watches.seen.values()))
            assert await status(health, READINESS) == SERVING
            kill()
            await wait_for_status(health, READINESS, NOT_SERVING)
            assert await status(health, LEARNING) == NOT_SERVING
            assert sample("banditd_serving") == 0
            assert sample("banditd_store_up") == 0
            degraded = await pb_grpc.RouterStub(channel).Route(ROUTE, timeout=10)
            assert degraded.degraded  # not ready, yet it still answers whoever asks
            restart()
            await wait_for_status(health, READINESS, SERVING)
            assert await status(health, LEARNING) == SERVING
            assert sample("banditd_serving") == 1
        finally:
            await watches.close()
    assert watches.seen == {LIVENESS: [SERVING]}


async def test_memory_store_learning_path_serves_and_settles_are_stamped(
    clock: FakeClock,
) -> None:
    """In memory the learning path is always SERVING; a Feedback and an expiry each stamp
    banditd_last_settle_timestamp_seconds, a duplicate does not."""
    daemon = build_daemon(daemon_settings(), clock=clock)
    await daemon.start()
    sample = daemon.metrics.registry.get_sample_value
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in (LIVENESS, READINESS, LEARNING):
                assert await status(health, service) == SERVING, service
            assert sample("banditd_store_up") == 1
            assert sample("banditd_last_settle_timestamp_seconds") == 0
            router = pb_grpc.RouterStub(channel)
            first = await router.Route(ROUTE, timeout=10)
            await router.Route(ROUTE, timeout=10)  # never gets a reward
            before = time.time()
            feedback = pb.FeedbackRequest(decision_id=first.decision_id, reward=1.0)
            await router.Feedback(feedback, timeout=10)
            stamped = sample("banditd_last_settle_timestamp_seconds")
            assert stamped is not None
            assert before <= stamped <= time.time()
            daemon.metrics.hot.last_settle_s = 1.0  # a marker: a duplicate must not move it
            duplicate = await router.Feedback(feedback, timeout=10)
            assert duplicate.status == pb.FEEDBACK_STATUS_DUPLICATE
            assert sample("banditd_last_settle_timestamp_seconds") == 1.0
            clock.advance(61)  # past reward_wait_s: `second` expires with the default reward
            assert await daemon.sweep_once() == 1  # `second`, defaulted
            expired = sample("banditd_last_settle_timestamp_seconds")
            assert expired is not None
            assert before <= expired <= time.time()
    finally:
        await daemon.stop(grace_s=0)
    assert sample("banditd_serving") == 0
