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
    model_key,
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
    version = int(await client.hget(model_key(), "v "))
    assert version == len(applied) == statuses.count(pb.FEEDBACK_STATUS_APPLIED)
    for resp, _ in routes:
        assert resp.model_version == version
        assert not resp.degraded
        assert sum(s.pulls for s in resp.scores) == len(applied)


async def test_feedback_batches_on_two_replicas_apply_each_reward_once(redis_url: str, client):
    """FeedbackBatch on Redis settles independent items concurrently: batches that overlap
    (between replicas and inside one batch) still apply every reward exactly once, and the
    shared state equals a single-process replay."""
    daemons = [build_daemon(redis_daemon_settings(redis_url)) for _ in range(2)]
    for d in daemons:
        await d.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") for d in daemons]
    stubs = [pb_grpc.RouterStub(c) for c in channels]
    rnd = random.Random(11)
    try:
        decisions = [await route(stubs[i % 2], rnd) for i in range(60)]
        rewards = {resp.decision_id: rnd.choice((0.0, 0.25, 0.5, 1.0)) for resp, _ in decisions}
        ids = list(rewards)
        batches = []
        for stub in stubs:  # every id goes to both replicas, some twice in one batch
            items = ids + rnd.sample(ids, 10)
            rnd.shuffle(items)
            request = pb.FeedbackBatchRequest(items=[
                pb.FeedbackRequest(decision_id=d, reward=rewards[d]) for d in items
            ])  # fmt: skip
            batches.append(stub.FeedbackBatch(request, timeout=30))
        responses = await asyncio.gather(*batches)
    finally:
        for c in channels:
            await c.close()
        for d in daemons:
            await d.stop(grace_s=0)
    results = [r for resp in responses for r in resp.results]
    assert all(r.code == 0 for r in results)
    applied_ids = [r.decision_id for r in results
                   if r.response.status == pb.FEEDBACK_STATUS_APPLIED]  # fmt: skip
    assert sorted(applied_ids) == sorted(ids)  # each exactly once, across both replicas
    for resp in responses:  # inside one batch a repeated id is never the applied one
        first: dict[str, int] = {}
        for i, r in enumerate(resp.results):
            first.setdefault(r.decision_id, i)
            if r.response.status == pb.FEEDBACK_STATUS_APPLIED:
                assert first[r.decision_id] == i
    by_id = {resp.decision_id: (resp, x) for resp, x in decisions}
    applied = [Applied(d, by_id[d][0].arm_id, by_id[d][1], rewards[d]) for d in applied_ids]
    spec = daemons[0].router._policies["chat"].spec
    assert_state_equals_replay(await stored_sums(client), applied, spec)
    assert int(await client.hget(model_key(), "v ")) == len(ids)
