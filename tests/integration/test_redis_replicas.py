"""Two daemon replicas on one Redis: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
import redis.asyncio as aioredis

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import build_daemon
from tests.integration.traffic import (
    Applied,
    assert_state_equals_replay,
    feedback,
    redis_daemon_settings,
    route,
    stored_sums,
)


@pytest.fixture
async def client(redis_url: str):
    c = aioredis.from_url(redis_url)
    await c.flushdb()
    yield c
    await c.aclose()


async def test_two_replicas_hammered_concurrently_equal_single_replay(redis_url: str, client):
    """Concurrent Route+Feedback on two replicas (some feedback sent to both) == one replay."""
    daemons = [build_daemon(redis_daemon_settings(redis_url)) for _ in range(2)]
    for d in daemons:
        await d.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") for d in daemons]
    stubs = [pb_grpc.RouterStub(c) for c in channels]
    rnd = random.Random(7)
    applied: list[Applied] = []
    statuses: list[int] = []
    gate = asyncio.Semaphore(24)

    async def one(i: int) -> None:
        async with gate:
            r = random.Random(i)
            resp, x = await route(stubs[r.randrange(2)], r)
            reward = r.choice((0.0, 0.25, 0.5, 1.0))
            if r.random() < 0.3:  # the same feedback to both replicas at once
                got = await asyncio.gather(*(feedback(s, resp.decision_id, reward) for s in stubs))
            else:
                got = [await feedback(stubs[r.randrange(2)], resp.decision_id, reward)]
            statuses.extend(s for s in got if s is not None)
            assert sorted(got) in (
                [pb.FEEDBACK_STATUS_APPLIED],
                [pb.FEEDBACK_STATUS_APPLIED, pb.FEEDBACK_STATUS_DUPLICATE],
            )
            applied.append(Applied(resp.decision_id, resp.arm_id, x, reward))

    try:
        await asyncio.gather(*(one(i) for i in range(rnd.randrange(380, 420))))
        routes = [await route(s, rnd) for s in stubs]  # both replicas see the final model
    finally:
        for c in channels:
            await c.close()
        for d in daemons:
            await d.stop(grace_s=0)
    spec = daemons[0].router._policies["chat"].spec
    assert_state_equals_replay(await stored_sums(client), applied, spec)
    version = int(await client.hget("banditd:{chat}:model", "v "))
    assert version == len(applied) == statuses.count(pb.FEEDBACK_STATUS_APPLIED)
    for resp, _ in routes:
        assert resp.model_version == version
        assert not resp.degraded
        assert sum(s.pulls for s in resp.scores) == len(applied)
