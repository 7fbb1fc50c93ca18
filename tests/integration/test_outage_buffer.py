"""Finding 2 of the robustness issue: a reward for an acknowledged decision is never refused
for good while the replica that routed it lives.

Replica B routes while Redis is down (degraded) and buffers its decisions under buffered ids.
Redis comes back; before B flushes, the rewards reach replica A. A must answer UNAVAILABLE
(retry), not a final NOT_FOUND, until B has flushed; then the reward the caller sent is applied,
not the default reward. Buffered decisions also survive a clean restart of B (spill file).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.errors import StateUnavailableError
from banditd.feedback import ids
from banditd.server.app import Daemon, build_daemon
from banditd.state.connection import RedisConnection, connect
from banditd.state.outage import SpillFile
from banditd.state.redis_store import RedisModelStore, RedisStoreParams
from banditd.types import ModelSpec, Outcome, PendingDecision
from tests.integration.conftest import RedisServer
from tests.integration.traffic import model_key, redis_daemon_settings

ROUTE = pb.RouteRequest(
    policy="chat",
    context=pb.Context(features={"x1": 0.5, "x2": -1.0}),
    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


async def start(redis: RedisServer, **options: object) -> tuple[Daemon, grpc.aio.Channel]:
    # health_interval_s: B must not flush on its own before the test lets it (it flushes
    # when the test calls its watcher's ping itself).
    settings = redis_daemon_settings(redis.url, health_interval_s=3600, **options)
    daemon = build_daemon(settings)  # type: ignore[arg-type]
    await daemon.start()
    return daemon, grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}")


@pytest.fixture
async def replicas(redis: RedisServer) -> AsyncIterator[tuple[Daemon, Daemon, pb_grpc.RouterStub,
                                                        pb_grpc.RouterStub]]:  # fmt: skip
    a, ch_a = await start(redis)
    b, ch_b = await start(redis)
    yield a, b, pb_grpc.RouterStub(ch_a), pb_grpc.RouterStub(ch_b)
    for ch in (ch_a, ch_b):
        await ch.close()
    for d in (a, b):
        await d.stop(grace_s=0)


async def feedback_code(stub: pb_grpc.RouterStub, decision_id: str, reward: float) -> str:
    try:
        reply = await stub.Feedback(pb.FeedbackRequest(decision_id=decision_id, reward=reward))
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return pb.FeedbackStatus.Name(reply.status)


async def test_reward_for_a_buffered_decision_is_retryable_on_another_replica_until_flushed(
    redis: RedisServer, replicas: tuple[Daemon, Daemon, pb_grpc.RouterStub, pb_grpc.RouterStub]
) -> None:
    """A answers UNAVAILABLE (not NOT_FOUND) until B flushes; then 18.0 is applied once."""
    _, b, stub_a, stub_b = replicas
    assert isinstance(b.store, RedisModelStore)
    redis.kill()
    routed = [await stub_b.Route(ROUTE, timeout=10) for _ in range(3)]
    assert all(r.degraded for r in routed)
    assert all(ids.buffered_at(r.decision_id) is not None for r in routed)
    redis.restart()
    for r in routed:  # Redis is back but B has not flushed: retry, never a final answer
        code = await feedback_code(stub_a, r.decision_id, 18.0)
        assert code == "UNAVAILABLE"
    assert await b.store.ping()  # B's watcher tick: flushes the buffer
    for r in routed:
        assert await feedback_code(stub_a, r.decision_id, 18.0) == "FEEDBACK_STATUS_APPLIED"
        assert await feedback_code(stub_b, r.decision_id, 18.0) == "FEEDBACK_STATUS_DUPLICATE"
    client = aioredis.from_url(redis.url)
    try:
        version = int(await client.hget(model_key(), "v ") or 0)
    finally:
        await client.aclose()
    assert version == 3


async def test_unknown_plain_ids_are_still_final_not_found(
    replicas: tuple[Daemon, Daemon, pb_grpc.RouterStub, pb_grpc.RouterStub],
) -> None:
    """Only buffered ids get the retry answer: a plain id nobody issued is NOT_FOUND."""
    _, _, stub_a, _ = replicas
    assert await feedback_code(stub_a, "chat:" + "ab" * 12, 1.0) == "NOT_FOUND"


async def test_the_retry_answer_is_bounded_by_buffer_max_age(redis: RedisServer) -> None:
    """After buffer_max_age_s (+ clock skew) the routing replica has given the decision up,
    so the answer becomes final NOT_FOUND; a stamp far in the future is NOT_FOUND at once."""
    now = [1_700_000_000.0]
    params = RedisStoreParams(timeout_s=1.0, buffer_max_age_s=60.0)
    store = RedisModelStore(connect(RedisConnection(redis.url, timeout_s=1.0)), params,
                            clock=lambda: now[0])  # fmt: skip
    spec = ModelSpec(dim=2, fingerprint="f")
    try:
        buffered = ids.buffered_id("p:" + "cd" * 12, now[0])
        with pytest.raises(StateUnavailableError, match="retry"):
            await store.settle(buffered, 1.0, now[0] + 10, spec)
        late = await store.settle(buffered, 1.0, now[0] + 60 + 31, spec)
        assert late.outcome is Outcome.UNKNOWN
        future = ids.buffered_id("p:" + "ef" * 12, now[0] + 3600)
        assert (await store.settle(future, 1.0, now[0], spec)).outcome is Outcome.UNKNOWN
    finally:
        await store.close()


async def test_buffered_decisions_survive_a_clean_restart_via_the_spill_file(
    redis: RedisServer, tmp_path: Path
) -> None:
    """B stops while Redis is down: its buffer goes to spill_path; the next B reads it back and
    flushes it as soon as Redis answers (here: at its start), so the reward joins on A."""
    spill = tmp_path / "spill" / "buffer.jsonl"
    a, ch_a = await start(redis)
    b, ch_b = await start(redis, spill_path=str(spill))
    try:
        redis.kill()
        routed = await pb_grpc.RouterStub(ch_b).Route(ROUTE, timeout=10)
        assert routed.degraded
        await ch_b.close()
        await b.stop(grace_s=0)
        assert spill.is_file()
        assert spill.stat().st_mode & 0o777 == 0o600  # the context vectors are in it
        redis.restart()
        b2, ch_b2 = await start(redis, spill_path=str(spill))
        try:
            assert isinstance(b2.store, RedisModelStore)
            assert b2.store.stats.unspilled == 1
            assert not spill.exists()  # start() pings Redis first, which flushed it
            stub_a = pb_grpc.RouterStub(ch_a)
            applied = await feedback_code(stub_a, routed.decision_id, 0.5)
            assert applied == "FEEDBACK_STATUS_APPLIED"
        finally:
            await ch_b2.close()
            await b2.stop(grace_s=0)
    finally:
        await ch_a.close()
        await a.stop(grace_s=0)


async def test_a_spill_file_left_by_another_worker_count_is_adopted(
    redis: RedisServer, tmp_path: Path
) -> None:
    """Worker 1 of 2 spilled to spill_path.w1; after a restart with one process (workers = 1)
    the daemon reads that file too, flushes its decision and removes it: the reward joins."""
    spill = tmp_path / "spill" / "buffer.jsonl"
    left = spill.with_name("buffer.jsonl.w1")
    b, ch_b = await start(redis, spill_path=str(left))  # the file worker 1 of 2 writes
    try:
        redis.kill()
        routed = await pb_grpc.RouterStub(ch_b).Route(ROUTE, timeout=10)
        assert routed.degraded
    finally:
        await ch_b.close()
        await b.stop(grace_s=0)
    assert left.is_file()
    redis.restart()
    one, ch = await start(redis, spill_path=str(spill))
    try:
        assert isinstance(one.store, RedisModelStore)
        assert one.store.stats.unspilled == 1
        assert not left.exists()
        applied = await feedback_code(pb_grpc.RouterStub(ch), routed.decision_id, 0.5)
        assert applied == "FEEDBACK_STATUS_APPLIED"
    finally:
        await ch.close()
        await one.stop(grace_s=0)


def test_an_adopted_spill_file_goes_once_its_decisions_are_in_the_own_file(
    tmp_path: Path,
) -> None:
    """Reading gives own then adopted decisions; writing (at close) replaces the adopted files
    by the own one, so no decision is read twice by a later start."""
    x = np.array([1.0, 0.5])
    mine, left = tmp_path / "s.w0", tmp_path / "s"
    SpillFile(left).write([PendingDecision("p:1", "p", "", "a", x, 1.0, 1, 0.0, 60.0, "a")])
    SpillFile(mine).write([PendingDecision("p:2", "p", "", "a", x, 1.0, 1, 0.0, 60.0, "a")])
    spill = SpillFile(mine, (left,))
    decisions = list(spill.read())
    assert [d.decision_id for d in decisions] == ["p:2", "p:1"]
    spill.write(decisions)
    assert not left.exists()
    assert [d.decision_id for d in SpillFile(mine).read()] == ["p:2", "p:1"]
    SpillFile(left).write(decisions[:1])
    spill.remove()
    assert not mine.exists()
    assert not left.exists()


def test_spill_file_round_trips_decisions_exactly(tmp_path: Path) -> None:
    """x goes through JSON and back bit for bit; a corrupt line is skipped, not fatal."""
    x = np.array([1.0, 0.1, -1e-300, 2.0**-1074, 1.7976931348623157e308])
    d = PendingDecision("p:1.b65", "p", "s", "a", x, 0.3, 7, 1.5, 61.5, "*")
    spill = SpillFile(tmp_path / "s.jsonl")
    spill.write([d])
    with spill.path.open("a") as f:
        f.write("{not json\n")
    (back,) = list(spill.read())
    assert back.x.tobytes() == x.tobytes()
    assert (back.decision_id, back.segment, back.model_arm, back.deadline) == (
        d.decision_id, d.segment, d.model_arm, d.deadline
    )  # fmt: skip
