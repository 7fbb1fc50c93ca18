"""The key layout's migration (banditd/state/layout.py): state written in the layout before
segment tags (every key of a policy in `{<policy>}`, untagged decision ids) is moved to the
per-segment slots at start; the model is the same, and decisions pending under the old ids
settle exactly once."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.errors import ConfigError, StateUnavailableError
from banditd.feedback import ids
from banditd.server.app import Daemon, build_daemon
from banditd.state import codec
from banditd.state.connection import RedisConnection, connect
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_admin import RedisAdmin
from banditd.state.redis_store import RedisModelStore, RedisStoreParams
from banditd.types import ModelKey, ModelSpec, Outcome, PendingDecision
from tests.integration.conftest import RedisServer
from tests.integration.traffic import redis_daemon_settings

T0 = 1_700_000_000.0
SPEC = ModelSpec(dim=2, fingerprint="f", default_reward=0.25)
SEGMENTS = ("", "s1", "{x}/y:z")  # braces, a slash and a colon are fine in a segment
ARMS = ("a", "b")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    await c.flushdb()
    yield c
    await c.aclose()


def store(url: str, **params: Any) -> RedisModelStore:
    return RedisModelStore(connect(RedisConnection(url, timeout_s=2.0)), RedisStoreParams(**params))


# -- the layout before segment tags, written with raw commands ------------------------------
def old_id() -> str:
    return f"p:{secrets.token_hex(12)}"


def pending_fields(d: PendingDecision) -> dict[str, bytes | str]:
    """The pending hash as record.lua wrote it before segment tags (keys.PENDING_FIELDS)."""
    return {
        "segment": d.segment, "arm": d.arm, "x": codec.encode_vector(d.x),
        "propensity": codec.encode_f64(d.propensity), "model_version": str(d.model_version),
        "created_at": codec.encode_f64(d.created_at), "deadline": codec.encode_f64(d.deadline),
        "sums_field": f"{d.segment} {d.arm}", "version_field": f"v {d.segment}",
        "fingerprint_field": f"f {d.segment}", "stamp_field": f"a {d.segment} {d.arm}",
    }  # fmt: skip


async def write_old_layout(
    client: aioredis.Redis, policy: str, memory: InMemoryModelStore, registry: bool = True
) -> None:
    """What the previous version left in Redis for `policy`: one model hash, one sums hash,
    the registry and index (absent before segments were tracked), all tagged `{<policy>}`."""
    old = f"banditd:{{{policy}}}"
    stamp = 0
    for key, states in memory.models().items():
        if key.policy != policy:
            continue
        version = sum(s.n for s in states.values())
        meta = {f"v {key.segment}": version, f"f {key.segment}": SPEC.fingerprint}
        await client.hset(f"{old}:model", mapping=meta)
        for arm, state in states.items():
            stamp += 1
            sums = codec.ArmSums(state.s, state.b, state.n, codec.NO_EPOCH, stamp)
            await client.hset(f"{old}:sums", f"{key.segment} {arm}", codec.encode_sums(sums))
            await client.hset(f"{old}:model", f"a {key.segment} {arm}", stamp)
        if registry:
            await client.zadd(f"{old}:segments", {key.segment: T0})
            index = "\n".join(f"{key.segment} {arm}" for arm in states)
            await client.hset(f"{old}:segarms", key.segment, index)
    await client.hset(f"{old}:model", "c", stamp)
    await client.sadd("banditd:policies", policy)


async def write_old_pending(client: aioredis.Redis, d: PendingDecision) -> None:
    old = f"banditd:{{{d.policy}}}"
    await client.hset(f"{old}:pending:{d.decision_id}", mapping=pending_fields(d))
    await client.pexpire(f"{old}:pending:{d.decision_id}", 3_600_000)
    await client.zadd(f"{old}:deadlines", {d.decision_id: d.deadline})


async def write_old_tombstone(client: aioredis.Redis, decision_id: str, arm: str) -> None:
    await client.hset(f"banditd:{{p}}:tomb:{decision_id}", mapping={
        "outcome": "applied", "arm": arm, "reward": codec.encode_f64(1.0),
        "settled_at": codec.encode_f64(T0), "model_version": 1})  # fmt: skip


def decision(decision_id: str, segment: str, arm: str, x: list[float], wait: float = 60.0,
             policy: str = "p") -> PendingDecision:  # fmt: skip
    return PendingDecision(decision_id, policy, segment, arm, np.array(x), 0.5, 0, T0, T0 + wait)


def learned(policy: str = "p", n: int = 12, seed: int = 3) -> InMemoryModelStore:
    """A memory store that learned n rewards over SEGMENTS x ARMS (multiples of 1/4)."""
    memory, rnd = InMemoryModelStore(), random.Random(seed)
    for i in range(n):
        x = [1.0, rnd.choice([-1.0, -0.5, 0.5, 1.0])]
        d = decision(f"{policy}:m{i}", SEGMENTS[i % 3], ARMS[i % 2], x, policy=policy)
        memory.record_now(d)
        memory.settle_now(d.decision_id, rnd.choice([0.0, 0.25, 1.0]), T0 + 1, SPEC)
    return memory


def exported(export: Any) -> list[tuple[Any, ...]]:
    """An export as comparable values: models, then every arm's S, b, n, epoch."""
    arms = [(seg, arm, s.s.tobytes(), s.b.tobytes(), s.n, s.epoch) for seg, arm, s in export.arms]
    return [*export.models, *arms]


async def same_as_memory(s: RedisModelStore, memory: InMemoryModelStore) -> None:
    for segment in SEGMENTS:
        got = await s.load(ModelKey("p", segment), list(ARMS), SPEC)
        want = await memory.load(ModelKey("p", segment), list(ARMS), SPEC)
        assert got.version == want.version, segment
        for arm in ARMS:
            g, w = got.arms[arm], want.arms[arm]
            assert (g.n, g.s.tobytes(), g.b.tobytes()) == (w.n, w.s.tobytes(), w.b.tobytes())


# -- tests ----------------------------------------------------------------------------------
async def test_old_layout_state_is_migrated_and_old_decisions_settle_once(
    redis_url: str, client: aioredis.Redis
) -> None:
    """The previous version's keys (and, for policy q, state older than the segment registry)
    become per-segment keys with the same model; the legacy slot keeps only the counter; a
    pending decision of the old form is applied once whichever replica gets its reward, and
    a reward the old version applied stays a DUPLICATE."""
    memory = learned()
    await write_old_layout(client, "p", memory)
    await write_old_layout(client, "q", learned("q"), registry=False)
    pending = decision(old_id(), "s1", "a", [1.0, 0.5])
    unrewarded = decision(old_id(), "{x}/y:z", "b", [1.0, -0.5], wait=5.0)
    settled = old_id()
    for d in (pending, unrewarded):
        await write_old_pending(client, d)
        memory.record_now(d)
    await write_old_tombstone(client, settled, "a")

    before = store(redis_url, key_layout="policy")  # reads the layout as it is
    try:
        export = await RedisAdmin(before).export("p")
    finally:
        await before.close()
    replicas = [store(redis_url), store(redis_url)]
    try:
        assert all(await asyncio.gather(*(r.ping() for r in replicas)))
        assert sorted(r.layout.migrated_segments for r in replicas) == [0, 6]  # once
        assert await client.get("banditd:layout") == b"segment"
        assert exported(await RedisAdmin(replicas[1]).export("p")) == exported(export)
        assert await client.exists("banditd:{p}:sums", "banditd:{p}:segarms") == 0
        assert set(await client.hkeys("banditd:{p}:model")) == {b"c", b"layout", b"migrated"}
        assert {s.segment for s in await replicas[0].segments("q")} == set(SEGMENTS)
        for r in replicas:  # both cache every arm now
            await same_as_memory(r, memory)

        answers = await asyncio.gather(
            *(r.settle(pending.decision_id, 1.0, T0 + 2, SPEC) for r in replicas)
        )
        assert sorted(a.outcome.value for a in answers) == ["applied", "duplicate"]
        memory.settle_now(pending.decision_id, 1.0, T0 + 2, SPEC)
        dup = await replicas[0].settle(settled, 1.0, T0 + 2, SPEC)
        assert (dup.outcome, dup.arm) == (Outcome.DUPLICATE, "a")
        swept = [s for r in replicas for s in await r.expire(T0 + 10, 100, {"p": SPEC})]
        assert [(s.decision_id, s.outcome) for s in swept] == [
            (unrewarded.decision_id, Outcome.DEFAULTED)
        ]  # fmt: skip (both swept it: once)
        memory.expire_now(T0 + 10, 100, {"p": SPEC})
        assert await replicas[1].expire(T0 + 20, 100, {"p": SPEC}) == []
        late = await replicas[1].settle(unrewarded.decision_id, 1.0, T0 + 20, SPEC)
        assert late.outcome is Outcome.EXPIRED
        for r in replicas:  # a stamp after the migration never repeats one cached before it
            await same_as_memory(r, memory)
        assert await client.zcard("banditd:{p}:deadlines") == 0
    finally:
        for r in replicas:
            await r.close()


async def test_a_migration_cut_short_is_finished_by_the_next_replica(
    redis_url: str, client: aioredis.Redis
) -> None:
    """A replica that loses Redis halfway (after copying a segment, before forgetting its
    legacy copy) leaves the layout unmarked and the lock free; the next start finishes the
    job, and the model is the one the old version had."""
    memory = learned()
    await write_old_layout(client, "p", memory)
    first = store(redis_url)
    forget = first.layout._forget
    calls = 0

    async def fail_second(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StateUnavailableError("connection lost (test)")
        return await forget(*args, **kwargs)

    first.layout._forget = fail_second  # type: ignore[method-assign]
    try:
        assert not await first.ping()
        assert not first.layout.ready
        assert first.layout.migrated_segments == 1
    finally:
        await first.close()
    assert await client.get("banditd:layout") is None
    assert await client.get("banditd:layout-lock") is None
    second = store(redis_url)
    try:
        await same_as_memory(second, memory)  # (its first call migrates)
        assert second.layout.migrated_segments == 2
        assert await client.exists("banditd:{p}:sums") == 0
        d = decision(ids.new_decision_id("p", "s1"), "s1", "a", [1.0, 1.0])
        await second.record(d)
        memory.record_now(d)
        assert (await second.settle(d.decision_id, 1.0, T0 + 2, SPEC)).outcome is Outcome.APPLIED
        memory.settle_now(d.decision_id, 1.0, T0 + 2, SPEC)
        await same_as_memory(second, memory)
    finally:
        await second.close()


async def test_a_redis_that_comes_back_in_the_old_layout_is_migrated_again(
    tmp_path: Path,
) -> None:
    """A Redis replaced while a replica runs (restored from a backup taken before the upgrade,
    say) is checked again when it answers after the outage, and migrated before use."""
    server = RedisServer(tmp_path)
    s = store(server.url)
    try:
        assert await s.ping()  # an empty Redis: marked at once
        server.kill()
        assert not await s.ping()
        server.restart()  # empty again (no persistence): now the old layout's state
        client = aioredis.from_url(server.url)
        memory = learned()
        await write_old_layout(client, "p", memory)
        await client.aclose()
        assert await s.ping()
        assert s.layout.migrated_segments == 3
        await same_as_memory(s, memory)
    finally:
        await s.close()
        server.stop()


async def test_the_policy_layout_refuses_a_migrated_redis(redis_url: str, client) -> None:
    """key_layout = "policy" cannot read per-segment state: it stops at start, with the fix."""
    migrated = store(redis_url)
    assert await migrated.ping()
    await migrated.close()
    old = store(redis_url, key_layout="policy")
    try:
        with pytest.raises(ConfigError, match="key_layout"):
            await old.ping()
    finally:
        await old.close()


async def test_a_policy_layout_replica_stops_learning_once_the_redis_is_migrated(
    redis_url: str, client: aioredis.Redis
) -> None:
    """The rolling upgrade's second step (key_layout "policy" -> "segment") has both kinds of
    replica for a while. Once a "segment" one migrated the Redis, a "policy" one neither
    learns into the keys nobody reads any more (its settle is refused, UNAVAILABLE: the caller
    retries elsewhere; its Routes are degraded) nor answers NOT_FOUND for a tagged id; its
    next ping sees the migration and it refuses everything. Its decisions settle once on the
    others."""
    old = store(redis_url, key_layout="policy")
    new = store(redis_url)
    try:
        first, second = (decision(old_id(), "s1", "a", [1.0, 0.5]) for _ in range(2))
        for d in (first, second):
            await old.record(d)
        assert (await old.settle(first.decision_id, 1.0, T0 + 1, SPEC)).outcome is Outcome.APPLIED
        assert await old.ping()
        assert await new.ping()  # migrates
        with pytest.raises(StateUnavailableError, match="key_layout"):
            await old.settle(second.decision_id, 1.0, T0 + 2, SPEC)
        assert (await old.load(ModelKey("p", "s1"), ["a"], SPEC)).degraded
        assert await client.exists("banditd:{p}:sums") == 0
        fresh = decision(ids.new_decision_id("r", "s1"), "s1", "a", [1.0, 0.5], policy="r")
        await new.record(fresh)  # a policy the migration never saw
        with pytest.raises(StateUnavailableError, match="retry"):
            await old.settle(fresh.decision_id, 1.0, T0 + 2, SPEC)
        assert not await old.ping()
        with pytest.raises(StateUnavailableError, match="key_layout"):
            await old.call(lambda: old.client.ping())
        answers = [await s.settle(d.decision_id, 1.0, T0 + 2, SPEC)
                   for s in (new, new) for d in (second, fresh)]  # fmt: skip
        assert [a.outcome.value for a in answers] == ["applied"] * 2 + ["duplicate"] * 2
        assert (await new.load(ModelKey("p", "s1"), ["a"], SPEC)).arms["a"].n == 2
    finally:
        await old.close()
        await new.close()


# -- a daemon upgraded in place, over gRPC ----------------------------------------------------
def route(segment: str, rnd: random.Random) -> pb.RouteRequest:
    features = {"x1": rnd.choice([-1.0, 0.5, 1.0]), "x2": rnd.choice([-0.5, 0.0, 1.0])}
    return pb.RouteRequest(policy="chat", segment=segment, context=pb.Context(features=features),
                           candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")])  # fmt: skip


async def started(settings: Any) -> tuple[Daemon, grpc.aio.Channel]:
    daemon = build_daemon(settings)
    await daemon.start()
    return daemon, grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}")


async def test_a_daemon_upgraded_in_place_exports_the_same_model_and_joins_old_decisions(
    redis_url: str, client: aioredis.Redis
) -> None:
    """A daemon with key_layout = "policy" (the rolling upgrade's first step: the old keys,
    untagged ids) learns over three segments and leaves decisions pending; restarted with the
    per-segment layout it migrates at start, ExportPolicy answers the same state, the old
    decisions' rewards are APPLIED once (DUPLICATE on a second replica), and new decisions
    carry their segment's tag."""
    rnd = random.Random(5)
    old, channel = await started(redis_daemon_settings(redis_url, key_layout="policy"))
    pending: list[str] = []
    try:
        stub = pb_grpc.RouterStub(channel)
        for i in range(24):
            d = await stub.Route(route(("", "s1", "s2")[i % 3], rnd))
            assert ids.tag_of(d.decision_id) is None
            if i < 21:
                await stub.Feedback(pb.FeedbackRequest(decision_id=d.decision_id, reward=0.5))
            else:
                pending.append(d.decision_id)
        before = await apb_grpc.AdminStub(channel).ExportPolicy(
            apb.ExportPolicyRequest(policy="chat")
        )
    finally:
        await channel.close()
        await old.stop(grace_s=0)
    names = {k.decode() async for k in client.scan_iter(match="banditd:*")}
    assert len(names) > 10  # every key where the previous version kept it
    assert all(n.startswith("banditd:{chat}:") or "{" not in n for n in names)

    upgraded = [await started(redis_daemon_settings(redis_url)) for _ in range(2)]
    try:
        (daemon, ch1), (_, ch2) = upgraded
        assert isinstance(daemon.store, RedisModelStore)
        assert daemon.store.layout.migrated_segments == 3
        after = await apb_grpc.AdminStub(ch2).ExportPolicy(apb.ExportPolicyRequest(policy="chat"))
        assert after == before
        stubs = [pb_grpc.RouterStub(c) for c in (ch1, ch2)]
        for decision_id in pending:
            answers = [
                (await s.Feedback(pb.FeedbackRequest(decision_id=decision_id, reward=1.0))).status
                for s in stubs
            ]  # fmt: skip
            assert answers == [pb.FEEDBACK_STATUS_APPLIED, pb.FEEDBACK_STATUS_DUPLICATE]
        new = await stubs[1].Route(route("s1", rnd))
        assert ids.tag_of(new.decision_id) == ids.segment_tag("s1")
        await stubs[0].Feedback(pb.FeedbackRequest(decision_id=new.decision_id, reward=1.0))
        final = await apb_grpc.AdminStub(ch1).ExportPolicy(apb.ExportPolicyRequest(policy="chat"))
        assert sorted(m.version for m in final.models) == [8, 8, 9]  # 7 rewards + 1 (+ 1 new)
        assert sum(a.n for a in final.arms) == 24 + 1
    finally:
        for daemon, channel in upgraded:
            await channel.close()
            await daemon.stop(grace_s=0)
