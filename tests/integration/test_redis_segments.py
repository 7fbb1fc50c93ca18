"""Bounded state on the Redis store: the segment limit (shared by every replica), idle expiry,
Admin ListSegments/DeleteSegment, and ImportPolicy checked like Route input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.feedback import ids
from banditd.server.app import Daemon, build_daemon
from banditd.state import keys
from banditd.state.connection import RedisConnection, connect
from banditd.state.redis_store import RedisModelStore
from banditd.types import ModelKey, ModelSpec, PendingDecision
from tests.integration.conftest import daemon_settings

T0 = 1_700_000_000.0


def settings(url: str, **policy: Any) -> Any:
    return daemon_settings(
        store={"backend": "redis", "redis": {"url": url, "timeout_s": 1.0}},
        policies={"chat": {"arms": ["a", "b", "c"], "features": {"numeric": ["x1", "x2"]},
                           "reward_wait_s": 60, **policy}},
    )  # fmt: skip


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    await c.flushdb()
    yield c
    await c.aclose()


@pytest.fixture
async def replicas(
    redis_url: str, client: aioredis.Redis
) -> AsyncIterator[list[tuple[pb_grpc.RouterStub, apb_grpc.AdminStub]]]:
    daemons: list[Daemon] = [build_daemon(settings(redis_url, max_segments=3)) for _ in range(2)]
    for d in daemons:
        await d.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") for d in daemons]
    yield [(pb_grpc.RouterStub(c), apb_grpc.AdminStub(c)) for c in channels]
    for c in channels:
        await c.close()
    for d in daemons:
        await d.stop(grace_s=0)


def did(i: int, segment: str) -> str:
    return f"p:{ids.segment_tag(segment)}-{i:04x}"


async def sums_fields(store: RedisModelStore, policy: str) -> list[bytes]:
    """Every sums field of the policy, over all its slots."""
    out: list[bytes] = []
    for slot in await store.slots(policy):
        out += await store.client.hkeys(store.keys.sums(slot))
    return sorted(out)


def route(segment: str) -> pb.RouteRequest:
    return pb.RouteRequest(policy="chat", segment=segment,
                           context=pb.Context(features={"x1": 0.5}),
                           candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")])  # fmt: skip


async def learn(stub: pb_grpc.RouterStub, segment: str, reward: float = 1.0) -> None:
    d = await stub.Route(route(segment))
    await stub.Feedback(pb.FeedbackRequest(decision_id=d.decision_id, reward=reward))


async def everything(client: aioredis.Redis) -> dict[bytes, object]:
    """Every key's value (hashes and sorted sets), to show an operation changed nothing."""
    out: dict[bytes, object] = {}
    for key in await client.keys("banditd:{chat}:*") + await client.keys("banditd:{chat/*}:*"):
        kind = await client.type(key)
        if kind == b"hash":
            out[key] = await client.hgetall(key)
        elif kind == b"zset":
            out[key] = await client.zrange(key, 0, -1, withscores=True)
    return out


async def test_the_segment_limit_holds_across_replicas_and_admin_frees_room(
    replicas: list[tuple[pb_grpc.RouterStub, apb_grpc.AdminStub]], client: aioredis.Redis
) -> None:
    """Segments made on either replica count against one limit; the 4th new one is
    RESOURCE_EXHAUSTED on both; DeleteSegment forgets one (every field of it) and frees room."""
    (r1, a1), (r2, a2) = replicas
    await learn(r1, "s1")
    await learn(r2, "s2")
    await learn(r1, "s3")
    for stub in (r1, r2):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Route(route("s4"))
        assert exc.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_segments" in (exc.value.details() or "")
    await learn(r2, "s1")  # a known segment still routes and learns
    listed = await a2.ListSegments(apb.ListSegmentsRequest(policy="chat"))
    assert listed.total == 3  # (order: last use, refreshed at most once a minute)
    assert {s.segment: s.version for s in listed.segments} == {"s1": 2, "s2": 1, "s3": 1}
    page = await a1.ListSegments(apb.ListSegmentsRequest(policy="chat", offset=1, limit=1))
    assert [s.segment for s in page.segments] == [listed.segments[1].segment]

    assert (await a1.DeleteSegment(apb.DeleteSegmentRequest(policy="chat", segment="s2"))).deleted
    k = keys.Keys()
    slot = k.segment_slot("chat", "s2")
    fields = await client.hkeys(k.model(slot)) + await client.hkeys(k.sums(slot))
    assert not [f for f in fields if b"s2" in f]
    assert await client.zscore(k.segments("chat"), "s2") is None
    assert await client.hget(k.segment_arms(slot), "s2") is None
    deleted = await a2.DeleteSegment(apb.DeleteSegmentRequest(policy="chat", segment="s2"))
    assert not deleted.deleted
    again = await r1.Route(route("s2"))  # room for one: s2 again, from the prior
    assert sum(s.pulls for s in again.scores) == 0
    with pytest.raises(grpc.aio.AioRpcError):
        await r2.Route(route("s4"))


async def test_evict_lru_and_idle_expiry_on_redis(redis_url: str, client: aioredis.Redis) -> None:
    """evict_lru forgets the least recently used segment; the sweep forgets idle ones."""
    store = RedisModelStore(connect(RedisConnection(redis_url, timeout_s=1.0)))
    spec = ModelSpec(dim=2, fingerprint="f", max_segments=2, evict_lru=True, segment_ttl_s=100.0)
    try:
        for i, (segment, t) in enumerate((("s1", T0), ("s2", T0 + 10), ("s3", T0 + 20))):
            await store.load(ModelKey("p", segment), ["a"], spec, for_route=True)
            d = PendingDecision(
                did(i, segment), "p", segment, "a", np.array([1.0, 0.5]), 1.0, 0, t, t + 60
            )
            await store.record(d, spec)
            await store.settle(d.decision_id, 1.0, t, spec)
        assert [s.segment for s in await store.segments("p")] == ["s3", "s2"]
        assert await sums_fields(store, "p") == [b"s2 a", b"s3 a"]  # s1's state went too
        await store.expire(T0 + 115, 100, {"p": spec})  # s2 last used at T0 + 10
        assert [s.segment for s in await store.segments("p")] == ["s3"]
        assert await sums_fields(store, "p") == [b"s3 a"]
        assert store.stats.expired_segments == 1
    finally:
        await store.close()


async def test_a_reward_for_a_deleted_segment_registers_it_again(
    redis_url: str, client: aioredis.Redis
) -> None:
    """A decision pending when its segment was deleted still settles, and the segment and its
    index come back (so the limit and a later delete see it)."""
    store = RedisModelStore(connect(RedisConnection(redis_url, timeout_s=1.0)))
    spec = ModelSpec(dim=2, fingerprint="f", max_segments=10)
    try:
        await store.load(ModelKey("p", "s"), ["a"], spec, for_route=True)
        await store.record(PendingDecision(did(1, "s"), "p", "s", "a", np.array([1.0, 0.5]),
                                           1.0, 0, T0, T0 + 60), spec)  # fmt: skip
        assert await store.delete_segment("p", "s")
        await store.settle(did(1, "s"), 1.0, T0 + 1, spec)
        assert [(s.segment, s.arms, s.version) for s in await store.segments("p")] == [("s", 1, 1)]
        assert await store.delete_segment("p", "s")
        assert await sums_fields(store, "p") == []
    finally:
        await store.close()


async def test_reset_forgets_the_segment_registry(
    replicas: list[tuple[pb_grpc.RouterStub, apb_grpc.AdminStub]], client: aioredis.Redis
) -> None:
    """After ResetPolicy the limit counts from zero again, and the replica that reset it
    registers the segments it routes to again at once (not a minute later)."""
    (r1, a1), _ = replicas
    for segment in ("s1", "s2", "s3"):
        await learn(r1, segment)
    await a1.ResetPolicy(apb.ResetPolicyRequest(policy="chat"))
    assert (await a1.ListSegments(apb.ListSegmentsRequest(policy="chat"))).total == 0
    await learn(r1, "s4")
    await learn(r1, "s1")
    listed = await a1.ListSegments(apb.ListSegmentsRequest(policy="chat"))
    assert sorted(s.segment for s in listed.segments) == ["s1", "s4"]


# -- ImportPolicy is checked like Route input ------------------------------------------------
async def exported(r: pb_grpc.RouterStub, a: apb_grpc.AdminStub) -> apb.PolicyState:
    for segment in ("s1", "s2"):
        await learn(r, segment, 0.5)
    return await a.ExportPolicy(apb.ExportPolicyRequest(policy="chat"))


def tampered(state: apb.PolicyState, **arm: Any) -> apb.PolicyState:
    out = apb.PolicyState()
    out.CopyFrom(state)
    first = out.arms[0]
    for name, value in arm.items():
        if isinstance(value, list):
            del getattr(first, name)[:]
            getattr(first, name).extend(value)
        else:
            setattr(first, name, value)
    return out


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"arm_id": "zzz"}, "INVALID_ARGUMENT", "not an arm of this policy"),
        ({"s_upper": [-4.0, 0, 0, 0, 0, 0]}, "INVALID_ARGUMENT", "positive semidefinite"),
        ({"s_upper": [1.0, 5.0, 0, 1.0, 0, 0]}, "INVALID_ARGUMENT", "positive semidefinite"),
        ({"n": 2**60}, "INVALID_ARGUMENT", "2^53"),
        ({"b": [1e308, 1e308, 1e308]}, "INVALID_ARGUMENT", "unusable"),  # θ would overflow
        ({"segment": "nomodel"}, "INVALID_ARGUMENT", "no model entry"),
        ({"fingerprint": "other"}, "FAILED_PRECONDITION", "feature pipeline"),
    ],
)
async def test_bad_imports_are_refused_and_change_nothing(
    replicas: list[tuple[pb_grpc.RouterStub, apb_grpc.AdminStub]],
    client: aioredis.Redis,
    change: dict[str, Any],
    code: str,
    message: str,
) -> None:
    """Each bad state is refused with its status before anything is written (all or
    nothing: the other, valid arms of the same import are not written either)."""
    r, a = replicas[0]
    state = await exported(r, a)
    if "fingerprint" in change:
        bad = apb.PolicyState()
        bad.CopyFrom(state)
        bad.models[0].fingerprint = change["fingerprint"]
    else:
        bad = tampered(state, **change)
    before = await everything(client)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await a.ImportPolicy(apb.ImportPolicyRequest(state=bad))
    assert exc.value.code().name == code
    assert message in (exc.value.details() or "")
    assert await everything(client) == before


async def test_an_import_may_not_exceed_the_segment_limit(
    replicas: list[tuple[pb_grpc.RouterStub, apb_grpc.AdminStub]], client: aioredis.Redis
) -> None:
    """Merging an export into a policy that already has other segments is refused when the
    union passes max_segments (3 here); with replace it fits."""
    r, a = replicas[0]
    state = await exported(r, a)  # s1, s2
    await a.ResetPolicy(apb.ResetPolicyRequest(policy="chat"))
    await learn(r, "x1")
    await learn(r, "x2")
    before = await everything(client)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await a.ImportPolicy(apb.ImportPolicyRequest(state=state))
    assert exc.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await everything(client) == before
    await a.ImportPolicy(apb.ImportPolicyRequest(state=state, replace=True))
    listed = await a.ListSegments(apb.ListSegmentsRequest(policy="chat"))
    assert sorted(s.segment for s in listed.segments) == ["s1", "s2"]
    assert all(s.arms == 1 for s in listed.segments)
