"""Coalescing (banditd/state/coalescer.py): concurrent calls share pipelines, and sharing one
changes nothing a caller sees, errors included.

Counts here never depend on timing: commands queued by tasks that start in the same event-loop
turn (asyncio.gather) are always flushed together, in the next turn.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from banditd.api.v1 import bandit_pb2 as pb
from banditd.errors import StateUnavailableError
from banditd.server.app import build_daemon
from banditd.server.service import RouterService
from banditd.state.coalescer import Coalescer
from banditd.state.redis_store import RedisModelStore
from banditd.types import ModelKey, Outcome
from tests.integration.conftest import start_redis
from tests.integration.test_redis_store import SPEC, T0, did, pending, redis_store
from tests.integration.traffic import redis_daemon_settings


@pytest.fixture
async def rstore(redis_url: str) -> AsyncIterator[RedisModelStore]:
    store = await redis_store(redis_url)
    yield store
    await store.close()


async def warm(store: RedisModelStore) -> None:
    """One decision of policy "p" recorded, settled and loaded: the policy is registered and
    Redis holds the three scripts (so no NOSCRIPT round adds a flush to the counts)."""
    await store.record(pending(0xFFF, "a", [1.0, 0.0, 0.0], T0))
    await store.settle(did(0xFFF), 0.0, T0, SPEC)
    await store.load(ModelKey("p"), ["a"], SPEC)


async def test_concurrent_calls_go_out_as_one_pipeline_each_wave(
    rstore: RedisModelStore, redis_url: str
):
    """16 records, then 16 settles, then 16 loads, each wave started together: one flush per
    wave, and the same outcomes and sums as one call at a time on another store."""
    n = 16
    decisions = [pending(i, "ab"[i % 2], [1.0, 0.25 * i, -0.5], T0) for i in range(1, n + 1)]
    await warm(rstore)
    flushes, commands = rstore.stats.flushes, rstore.stats.flushed_commands
    await asyncio.gather(*(rstore.record(d) for d in decisions))
    assert (rstore.stats.flushes - flushes, rstore.stats.flushed_commands - commands) == (1, n)
    settled = await asyncio.gather(*(
        rstore.settle(d.decision_id, 0.5, T0 + 1, SPEC) for d in decisions
    ))  # fmt: skip
    assert {s.outcome for s in settled} == {Outcome.APPLIED}
    assert rstore.stats.flushes - flushes == 2
    loads = await asyncio.gather(*(rstore.load(ModelKey("p"), ["a", "b"], SPEC) for _ in range(n)))
    assert rstore.stats.flushes - flushes == 3
    assert rstore.stats.flushed_commands - commands == 3 * n

    one_by_one = await redis_store(redis_url, flush=False, coalesce=False)
    try:
        want = await one_by_one.load(ModelKey("p"), ["a", "b"], SPEC)
    finally:
        await one_by_one.close()
    for got in loads:
        assert got.version == want.version == n + 1
        for arm in "ab":
            g, w = got.arms[arm], want.arms[arm]
            assert (g.n, g.s.tobytes(), g.b.tobytes()) == (w.n, w.s.tobytes(), w.b.tobytes())


async def test_concurrent_route_feedback_through_the_router_need_fewer_flushes_than_commands(
    redis_url: str,
):
    """32 Route+Feedback round trips started together through the Router service: every
    Route's load goes out in the first flush, so the store sends fewer pipelines than it has
    commands (3 per round trip), and every reward is applied."""
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    daemon = build_daemon(redis_daemon_settings(redis_url))  # type: ignore[arg-type]
    store = daemon.store
    assert isinstance(store, RedisModelStore)
    service = RouterService(daemon.router, daemon.metrics)
    rnd = random.Random(0)

    async def one() -> int:
        request = pb.RouteRequest(
            policy="chat",
            context=pb.Context(features={"x1": rnd.choice((0.5, 1.0)), "x2": -0.25}),
            candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
        )
        routed = await service.Route(request, None)  # type: ignore[arg-type]
        reward = pb.FeedbackRequest(decision_id=routed.decision_id, reward=0.5)
        return int((await service.Feedback(reward, None)).status)  # type: ignore[arg-type]

    try:
        await one()  # the policy's first decision registers it (a pooled call), scripts cached
        flushes, commands = store.stats.flushes, store.stats.flushed_commands
        statuses = await asyncio.gather(*(one() for _ in range(32)))
        flushes, commands = store.stats.flushes - flushes, store.stats.flushed_commands - commands
    finally:
        await store.close()
    assert statuses == [pb.FEEDBACK_STATUS_APPLIED] * 32
    assert commands == 3 * 32
    assert flushes < commands


async def test_one_bad_command_in_a_pipeline_fails_only_its_caller(rstore: RedisModelStore):
    """A settle whose script fails (its pending hash was corrupted) goes out in the same
    pipeline as three good ones: only its caller gets UNAVAILABLE, the others are applied,
    and Redis is not marked down."""
    for i in range(1, 5):
        await rstore.record(pending(i, "a", [1.0, 0.5, 0.25], T0))
    await rstore.client.hset(rstore.keys.pending(did(2)), "deadline", b"xx")  # not a float64
    flushes = rstore.stats.flushes
    results = await asyncio.gather(
        *(rstore.settle(did(i), 1.0, T0 + 1, SPEC) for i in range(1, 5)),
        return_exceptions=True,
    )
    assert rstore.stats.flushes == flushes + 1
    assert isinstance(results[1], StateUnavailableError)
    assert "refused" in str(results[1])
    assert [r.outcome for r in results if not isinstance(r, BaseException)] == [Outcome.APPLIED] * 3
    assert rstore.healthy
    assert (await rstore.settle(did(3), 1.0, T0 + 2, SPEC)).outcome is Outcome.DUPLICATE


async def test_error_replies_go_to_their_own_futures(redis_url: str):
    """At the coalescer itself: the bad command's future raises the reply's error, the
    commands before and after it in the same pipeline get their replies."""
    client = aioredis.from_url(redis_url)
    coalescer = Coalescer(client, timeout_s=2.0)
    try:
        futures = [
            coalescer.execute("SET", "k", "text"),
            coalescer.execute("INCR", "k"),  # not an integer
            coalescer.execute("GET", "k"),
        ]
        replies = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await coalescer.aclose()
        await client.aclose()
    assert coalescer.stats.flushes == 1
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ResponseError)
    assert replies[2] == b"text"


async def test_scripts_flushed_from_redis_run_again_as_eval_in_a_pipeline(
    rstore: RedisModelStore,
):
    """After SCRIPT FLUSH (as after a Redis restart) every EVALSHA of a pipeline answers
    NOSCRIPT; each is sent again as EVAL, in one more pipeline, and succeeds; EVAL cached the
    script again."""
    decisions = [pending(i, "a", [1.0, 0.5, 0.25], T0) for i in range(1, 17)]
    await warm(rstore)
    await rstore.client.script_flush()
    flushes = rstore.stats.flushes
    await asyncio.gather(*(rstore.record(d) for d in decisions[:8]))
    assert rstore.stats.flushes == flushes + 2  # the EVALSHAs, then the EVALs
    await asyncio.gather(*(rstore.record(d) for d in decisions[8:]))
    assert rstore.stats.flushes == flushes + 3
    settled = await asyncio.gather(*(
        rstore.settle(d.decision_id, 1.0, T0 + 1, SPEC) for d in decisions
    ))  # fmt: skip
    assert {s.outcome for s in settled} == {Outcome.APPLIED}
    assert rstore.stats.flushes == flushes + 5


async def test_a_cancelled_caller_leaves_the_connection_in_step(redis_url: str):
    """A caller that gives up (a gRPC deadline) before or after its command was sent: its
    reply is read and dropped, and the next caller gets its own reply, not that one."""
    client = aioredis.from_url(redis_url)
    coalescer = Coalescer(client, timeout_s=2.0)
    try:
        before = coalescer.execute("SET", "k", "1")
        before.cancel()  # still queued: it is sent anyway
        await coalescer.execute("SET", "j", "2")
        sent = coalescer.execute("GET", "k")
        await asyncio.sleep(0)  # the next loop turn sends it
        assert coalescer.stats.flushes == 2
        sent.cancel()  # sent, reply not read yet
        assert await coalescer.execute("GET", "j") == b"2"
        assert await coalescer.execute("GET", "k") == b"1"
    finally:
        await coalescer.aclose()
        await client.aclose()


async def test_a_load_leaves_in_redis_the_sums_its_own_settles_bring(
    rstore: RedisModelStore, redis_url: str
):
    """A Route's load issued while this replica's settles on those arms are in flight does
    not fetch their sums (the settles' replies, read first, move the cache); if another
    replica changed such an arm meanwhile, it is fetched in a second call. Either way the
    state is bit for bit what a fresh replica loads."""
    key, arms = ModelKey("p"), ["a", "b"]
    for i in range(1, 9):  # odd ids learn arm "b", even ids arm "a"
        await rstore.record(pending(i, "ab"[i % 2], [1.0, 0.25 * i, 0.5], T0))
    await rstore.settle(did(1), 1.0, T0 + 1, SPEC)
    await rstore.settle(did(2), 1.0, T0 + 1, SPEC)
    await rstore.load(key, arms, SPEC)  # both arms cached
    fetched, commands = rstore.stats.bytes_in, rstore.stats.flushed_commands

    settles = [rstore.settle(did(i), 0.5, T0 + 2, SPEC) for i in (3, 4)]
    *_, got = await asyncio.gather(*settles, rstore.load(key, arms, SPEC))
    assert rstore.stats.bytes_in == fetched  # nothing fetched
    assert rstore.stats.flushed_commands == commands + 3  # two settles, one load call

    other = await redis_store(redis_url, flush=False)
    try:
        await other.settle(did(6), 0.25, T0 + 3, SPEC)  # arm "a", behind this replica's back
        settle = rstore.settle(did(8), 0.75, T0 + 3, SPEC)  # arm "a" too
        _, got = await asyncio.gather(settle, rstore.load(key, arms, SPEC))
        assert rstore.stats.bytes_in > fetched  # "a" was fetched after all
        assert rstore.stats.flushed_commands == commands + 6  # settle, load, load of "a"
        want = await other.load(key, arms, SPEC)
    finally:
        await other.close()
    assert want.arms["a"].n == 4
    for arm in arms:
        g, w = got.arms[arm], want.arms[arm]
        assert (g.n, g.s.tobytes(), g.b.tobytes()) == (w.n, w.s.tobytes(), w.b.tobytes())
        np.testing.assert_allclose(g.a_inv, w.a_inv, rtol=1e-9, atol=1e-12)


async def test_commands_sent_while_a_pipeline_is_answered_leave_together(tmp_path: Path):
    """One pipeline at a time: commands queued in later loop turns while the first one waits
    for its reply (Redis is stopped, so it cannot have come) leave together once it comes."""
    proc, port = start_redis(tmp_path)
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    coalescer = Coalescer(client, timeout_s=10.0)
    try:
        assert await coalescer.execute("PING") == b"PONG"  # connected
        proc.send_signal(signal.SIGSTOP)
        try:
            first = coalescer.execute("SET", "k", "1")
            later = []
            for i in range(3):  # three loop turns, each queueing one command
                await asyncio.sleep(0)
                later.append(coalescer.execute("INCR", f"n{i}"))
            await asyncio.sleep(0)
            assert coalescer.stats.flushes == 2  # PING, then SET; the INCRs are held back
        finally:
            proc.send_signal(signal.SIGCONT)
        assert await first == b"OK"
        assert await asyncio.gather(*later) == [1, 1, 1]
        assert (coalescer.stats.flushes, coalescer.stats.flushed_commands) == (3, 5)
    finally:
        await coalescer.aclose()
        await client.aclose()
        proc.terminate()
        proc.wait(timeout=10)
