"""Adapter paging through the gRPC API: residency reports, paging price, controller directives."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import Daemon, build_daemon
from tests.integration.conftest import daemon_settings

ARMS = ["a0", "a1", "a2", "a3", "a4", "a5"]
LOAD, EVICT = pb.PagingDirective.ACTION_LOAD, pb.PagingDirective.ACTION_EVICT


@pytest.fixture
async def paging_daemon() -> AsyncIterator[Daemon]:
    settings = daemon_settings(
        policies={
            "lora": {
                "arms": ARMS,
                "features": {"numeric": ["x1"]},
                "reward_wait_s": 60,
                "paging": {
                    "enabled": True,
                    "capacity_slots": 2,
                    "latency_weight": 0.002,
                    "default_latency_ms": 100.0,
                    "epoch_steps": 20,
                    "pinned": ["a0"],
                    "max_loads_per_epoch": 1,
                },
            }
        }
    )
    daemon: Daemon = build_daemon(settings)
    await daemon.start()
    yield daemon
    await daemon.stop(grace_s=0)


@pytest.fixture
async def paging_stub(paging_daemon: Daemon) -> AsyncIterator[pb_grpc.RouterStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paging_daemon.port}") as channel:
        yield pb_grpc.RouterStub(channel)


def _sample(daemon: Daemon, name: str) -> float:
    return daemon.metrics.registry.get_sample_value(name) or 0.0


def _route(x1: float, replica: str = "gpu0") -> pb.RouteRequest:
    return pb.RouteRequest(
        policy="lora",
        context=pb.Context(features={"x1": x1}),
        candidates=[pb.Candidate(id=a) for a in ARMS],
        replica=replica,
    )


async def test_paging_directives_follow_learned_utilities(
    paging_stub: pb_grpc.RouterStub, paging_daemon: Daemon
) -> None:
    """Route pays paging for non-resident adapters; the epoch plan loads the best, keeps pinned."""
    report = pb.ReportResidencyRequest(
        replica="gpu0",
        capacity_slots=2,
        adapters=[
            pb.AdapterResidency(adapter_id=a, resident=a in ("a0", "a1"), load_ms=100.0)
            for a in ARMS
        ],
    )
    plan = await paging_stub.ReportResidency(report)
    assert sorted(plan.resident) == ["a0", "a1"]
    assert plan.capacity_slots == 2

    rng = np.random.default_rng(0)
    first = await paging_stub.Route(_route(0.5))
    assert first.HasField("paging")
    penalty = {s.arm_id: s.penalty for s in first.scores}
    assert penalty["a0"] == penalty["a1"] == 0.0
    assert penalty["a3"] == pytest.approx(0.2)  # 0.002 reward units/ms · 100 ms
    assert first.paging.must_load == (first.arm_id not in ("a0", "a1"))
    paging_daemon.export_stats()  # the plan made at the first Route, before any feedback
    loads_before = _sample(paging_daemon, "banditd_adapter_cache_loads_total")
    evictions_before = _sample(paging_daemon, "banditd_adapter_cache_evictions_total")

    # a3 is the only adapter with a positive reward; one epoch is 20 Routes.
    await paging_stub.Feedback(
        pb.FeedbackRequest(decision_id=first.decision_id, reward=float(first.arm_id == "a3"))
    )
    must_load_seen = []
    for _ in range(19):
        r = await paging_stub.Route(_route(float(rng.uniform(-1, 1))))
        must_load_seen.append((r.arm_id, r.paging.must_load))
        await paging_stub.Feedback(
            pb.FeedbackRequest(decision_id=r.decision_id, reward=float(r.arm_id == "a3"))
        )
    assert all(m == (arm not in ("a0", "a1")) for arm, m in must_load_seen)
    misses = sum(m for _, m in must_load_seen) + first.paging.must_load
    assert _sample(paging_daemon, "banditd_adapter_cache_misses_total") == misses
    assert _sample(paging_daemon, "banditd_adapter_cache_hits_total") == 20 - misses

    plan = await paging_stub.GetPagingPlan(pb.GetPagingPlanRequest(replica="gpu0"))
    assert plan.epoch == 1
    directives = [(d.action, d.adapter_id) for d in plan.directives]
    assert directives == [(EVICT, "a1"), (LOAD, "a3")]  # evictions first; pinned a0 stays
    assert sorted(plan.resident) == ["a0", "a3"]  # banditd's view after its own plan

    after = await paging_stub.Route(_route(0.3))
    paging_daemon.export_stats()  # the epoch's plan (EVICT a1, LOAD a3) shows in the counters
    assert _sample(paging_daemon, "banditd_adapter_cache_loads_total") == loads_before + 1
    assert _sample(paging_daemon, "banditd_adapter_cache_evictions_total") == evictions_before + 1
    assert after.arm_id == "a3"
    assert not after.paging.must_load
    assert after.paging.epoch == 1
    assert [(d.action, d.adapter_id) for d in after.paging.directives] == directives

    # The stack carried out only the eviction so far: its report is the new truth.
    report.ClearField("adapters")
    report.adapters.extend([pb.AdapterResidency(adapter_id="a0", resident=True)])
    plan = await paging_stub.ReportResidency(report)
    assert list(plan.resident) == ["a0"]
    again = await paging_stub.Route(_route(0.3))
    assert again.paging.must_load == (again.arm_id != "a0")


async def test_route_without_replica_has_no_paging(paging_stub: pb_grpc.RouterStub) -> None:
    """No replica in the request: no paging price and no paging advice."""
    r = await paging_stub.Route(_route(0.1, replica=""))
    assert not r.HasField("paging")
    assert all(s.penalty == 0.0 for s in r.scores)


async def test_residency_report_needs_a_paging_policy(stub: pb_grpc.RouterStub) -> None:
    """A daemon without paging policies refuses residency reports with FAILED_PRECONDITION."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ReportResidency(pb.ReportResidencyRequest(replica="gpu0", capacity_slots=2))
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_residency_report_is_validated(paging_stub: pb_grpc.RouterStub) -> None:
    """Duplicate adapter ids and a missing replica are INVALID_ARGUMENT."""
    dup = pb.ReportResidencyRequest(
        replica="gpu0",
        adapters=[pb.AdapterResidency(adapter_id="a"), pb.AdapterResidency(adapter_id="a")],
    )
    for request in (dup, pb.ReportResidencyRequest(replica="")):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await paging_stub.ReportResidency(request)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
