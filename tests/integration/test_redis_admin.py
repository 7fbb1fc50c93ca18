"""The Admin gRPC service: arm lists across replicas, reset, export and import."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
import redis.asyncio as aioredis

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import build_daemon
from tests.integration.conftest import daemon_settings
from tests.integration.traffic import feedback, redis_daemon_settings, route


@pytest.fixture
async def replicas(redis_url: str):
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    daemons = [build_daemon(redis_daemon_settings(redis_url, health_interval_s=0.05))
               for _ in range(2)]  # fmt: skip
    for d in daemons:
        await d.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") for d in daemons]
    yield [(pb_grpc.RouterStub(c), apb_grpc.AdminStub(c)) for c in channels]
    for c in channels:
        await c.close()
    for d in daemons:
        await d.stop(grace_s=0)


def request(*arms: str) -> pb.RouteRequest:
    return pb.RouteRequest(policy="chat", context=pb.Context(features={"x1": 0.5}),
                           candidates=[pb.Candidate(id=a) for a in arms])  # fmt: skip


async def test_added_arm_is_routable_on_every_replica(replicas):
    """AddArm on one replica; the other adopts the stored arm list without a restart."""
    (r1, a1), (r2, _) = replicas
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await r2.Route(request("d"))
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    got = await a1.AddArm(apb.ArmRequest(policy="chat", arm_id="d"))
    assert list(got.arms) == ["a", "b", "c", "d"]
    for _ in range(100):
        try:
            resp = await r2.Route(request("d"))
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
    assert resp.arm_id == "d"
    await a1.RemoveArm(apb.ArmRequest(policy="chat", arm_id="a"))
    with pytest.raises(grpc.aio.AioRpcError):
        await r1.Route(request("a"))


async def test_export_reset_import_round_trip(replicas):
    """Reset forgets a policy's state; importing its export brings it back exactly."""
    (r1, a1), (r2, a2) = replicas
    rnd = random.Random(1)
    for _ in range(30):
        resp, _x = await route(r1, rnd)
        assert await feedback(r2, resp.decision_id, 1.0) == pb.FEEDBACK_STATUS_APPLIED
    policies = await a1.ListPolicies(apb.ListPoliciesRequest())
    assert [(p.name, p.declared, p.stored) for p in policies.policies] == [("chat", True, True)]
    exported = await a1.ExportPolicy(apb.ExportPolicyRequest(policy="chat"))
    assert sum(a.n for a in exported.arms) == 30
    assert [m.version for m in exported.models] == [30]
    listed = await a2.ListArms(apb.ListArmsRequest(policy="chat"))
    assert sum(a.pulls for a in listed.learned) == 30

    assert (await a2.ResetPolicy(apb.ResetPolicyRequest(policy="chat"))).models == 1
    after_reset = (await route(r1, rnd))[0]
    assert sum(s.pulls for s in after_reset.scores) == 0
    assert after_reset.model_version == 0

    imported = await a1.ImportPolicy(apb.ImportPolicyRequest(state=exported, replace=True))
    assert imported.arms == len(exported.arms)
    again = await a2.ExportPolicy(apb.ExportPolicyRequest(policy="chat"))
    assert again == exported
    for stub in (r1, r2):  # both replicas' caches see the imported state
        resp = (await route(stub, rnd))[0]
        assert sum(s.pulls for s in resp.scores) == 30


async def test_export_needs_the_redis_backend():
    """On the memory store, export is FAILED_PRECONDITION; listing still works."""
    d = build_daemon(daemon_settings())
    await d.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") as ch:
            admin = apb_grpc.AdminStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await admin.ExportPolicy(apb.ExportPolicyRequest(policy="chat"))
            assert exc.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            arms = await admin.ListArms(apb.ListArmsRequest(policy="chat"))
            assert list(arms.arms) == ["a", "b", "c"]
    finally:
        await d.stop(grace_s=0)
