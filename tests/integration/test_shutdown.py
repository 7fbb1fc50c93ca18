"""Daemon.stop in-process: readiness off first, in-flight RPCs finish, pending work settles."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import SERVICE_NAME, build_daemon
from banditd.state.memory_store import InMemoryModelStore
from banditd.types import ArmId, ModelKey, ModelSnapshot, ModelSpec
from tests.conftest import FakeClock
from tests.integration.conftest import daemon_settings

ROUTE = pb.RouteRequest(
    policy="chat",
    context=pb.Context(features={"x1": 0.5, "x2": -1.0}),
    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
)


class GatedStore(InMemoryModelStore):
    """The in-memory store, except that `load` waits for `gate` once `hold` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.closed = False

    async def load(
        self, key: ModelKey, arms: Sequence[ArmId], spec: ModelSpec, for_route: bool = False
    ) -> ModelSnapshot:
        if self.hold:
            self.entered.set()
            await self.gate.wait()
        return await super().load(key, arms, spec, for_route)

    async def close(self) -> None:
        self.closed = True
        await super().close()


async def test_stop_turns_readiness_off_and_lets_in_flight_rpcs_finish(tmp_path: Path) -> None:
    """An RPC inside its handler at stop() completes OK after health says NOT_SERVING."""
    store = GatedStore()
    trace = tmp_path / "trace.jsonl"
    daemon = build_daemon(daemon_settings(trace_path=str(trace)), store=store)
    await daemon.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        router = pb_grpc.RouterStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        )
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        store.hold = True
        in_flight = asyncio.ensure_future(router.Route(ROUTE, timeout=30))
        await asyncio.wait_for(store.entered.wait(), timeout=10)

        stopping = asyncio.create_task(daemon.stop(grace_s=20))
        update = await asyncio.wait_for(watch.read(), timeout=10)
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not in_flight.done()
        assert not stopping.done()
        watch.cancel()

        store.gate.set()
        reply = await asyncio.wait_for(in_flight, timeout=10)
        assert reply.arm_id in {"a", "b", "c"}
        await asyncio.wait_for(stopping, timeout=10)
    assert store.closed
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["decision_id"] for r in records if r["type"] == "decision"] == [reply.decision_id]


async def test_rpc_after_stop_is_refused_unavailable() -> None:
    """Once the listener has closed, new RPCs fail fast with UNAVAILABLE."""
    daemon = build_daemon(daemon_settings())
    await daemon.start()
    await daemon.stop(grace_s=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.RouterStub(channel).Route(ROUTE, timeout=5)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_stop_settles_decisions_past_their_deadline(clock: FakeClock) -> None:
    """The last sweep on stop applies the default reward to expired decisions."""
    store = InMemoryModelStore()
    daemon = build_daemon(daemon_settings(), store=store, clock=clock)
    await daemon.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        await pb_grpc.RouterStub(channel).Route(ROUTE)
    assert store.pending_count == 1
    clock.advance(61)  # reward_wait_s = 60 in daemon_settings
    await daemon.stop(grace_s=1)
    assert store.pending_count == 0
    defaulted = {"outcome": "defaulted"}
    registry = daemon.metrics.registry
    assert registry.get_sample_value("banditd_feedback_outcomes_total", defaulted) == 1


async def test_stop_ends_a_background_task_that_swallows_its_first_cancellation() -> None:
    """A watcher whose cancel is lost (on Python 3.11 a redis-py timeout expiring at the same
    moment can turn it into a TimeoutError that the watcher loop catches) cannot hang stop."""
    daemon = build_daemon(daemon_settings())
    await daemon.start()
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # ...and carry on, as the watcher loop would
        await asyncio.Event().wait()  # until cancelled again

    daemon.tasks.append(asyncio.create_task(stubborn()))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(daemon.stop(grace_s=0))
    await asyncio.wait({stopping}, timeout=30)  # waits without cancelling: a hang stays a hang
    hung = not stopping.done()
    if hung:  # end it for the next test: one more cancel reaches the stubborn task
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=5)
    assert not hung, "Daemon.stop hung on a task that swallowed its cancellation"
    assert swallowed.is_set()
    assert daemon.tasks[-1].cancelled()
