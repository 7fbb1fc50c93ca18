"""The Redis store against a 3-node Redis Cluster: policies, and one policy's segments, land
on different slots and shards."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.feedback import ids
from banditd.server.app import build_daemon
from banditd.state import codec, keys
from banditd.state.connection import RedisConnection, connect
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_store import RedisModelStore
from banditd.types import ModelKey, ModelSpec, Outcome, PendingDecision
from tests.integration.conftest import start_redis
from tests.integration.test_redis_store import run_table
from tests.integration.traffic import (
    ARMS,
    Applied,
    assert_state_equals_replay,
    feedback,
    redis_daemon_settings,
    route,
    stored_sums,
)


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(20_000, 30_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@contextlib.contextmanager
def running_cluster(mkdir: Callable[[str], Path]) -> Iterator[str]:
    """Three redis-server masters joined by `redis-cli --cluster create` on free ports; the
    URL of the first."""
    procs, ports = [], []
    try:
        for i in range(3):
            d = mkdir(f"cluster{i}")
            extra = ("--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"))
            proc, port = start_redis(d, port=cluster_port(), extra=extra)
            procs.append(proc)
            ports.append(port)
        cli = shutil.which("redis-cli")
        if cli is None:
            if os.environ.get("BANDITD_REQUIRE_REDIS"):
                pytest.fail("redis-cli is not installed (Debian package redis-tools)")
            pytest.skip("redis-cli not installed")
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        for port in ports:
            for _ in range(100):
                info = subprocess.run([cli, "-p", str(port), "cluster", "info"],
                                      capture_output=True, text=True, timeout=5).stdout  # fmt: skip
                if "cluster_state:ok" in info:
                    break
                subprocess.run(["sleep", "0.1"], check=True)
        yield f"redis://127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_cluster(tmp_path_factory.mktemp) as url:
        yield url


async def flush(url: str) -> None:
    client = RedisCluster.from_url(url)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    await client.aclose()


@pytest.mark.parametrize("untagged", [False, True], ids=["tagged", "untagged"])
async def test_cluster_store_matches_memory_store_on_settle_expire_table(
    cluster_url: str, untagged: bool
):
    """The contract table gives the same answers on a Redis Cluster, with decision ids of both
    forms (an untagged one moves from its policy's slot to its segment's when it settles)."""
    await flush(cluster_url)
    store = RedisModelStore(connect(RedisConnection(cluster_url, timeout_s=2.0, cluster=True)))
    try:
        got = await run_table(store, untagged)
    finally:
        await store.close()
    want = await run_table(InMemoryModelStore(), untagged)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, tuple):
            assert g[:2] == w[:2]
            for arm in w[2]:
                assert g[2][arm][:3] == w[2][arm][:3]
        else:
            assert g == w


async def test_two_replicas_on_a_cluster_equal_single_replay(cluster_url: str):
    """Concurrent Route+Feedback through two replicas on the cluster: nothing lost or doubled."""
    await flush(cluster_url)
    settings = redis_daemon_settings(cluster_url, cluster=True)
    daemons = [build_daemon(settings) for _ in range(2)]  # type: ignore[arg-type]
    for d in daemons:
        await d.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") for d in daemons]
    stubs = [pb_grpc.RouterStub(c) for c in channels]
    applied: list[Applied] = []

    async def one(i: int) -> None:
        r = random.Random(i)
        resp, x = await route(stubs[i % 2], r)
        got = await asyncio.gather(*(feedback(s, resp.decision_id, 0.5) for s in stubs))
        assert sorted(got) == [pb.FEEDBACK_STATUS_APPLIED, pb.FEEDBACK_STATUS_DUPLICATE]
        applied.append(Applied(resp.decision_id, resp.arm_id, x, 0.5))

    try:
        await asyncio.gather(*(one(i) for i in range(120)))
    finally:
        for c in channels:
            await c.close()
        for d in daemons:
            await d.stop(grace_s=0)
    client = RedisCluster.from_url(cluster_url)
    sums = await stored_sums(client)
    await client.aclose()
    assert_state_equals_replay(sums, applied, daemons[0].router._policies["chat"].spec)


async def owners(url: str) -> dict[int, int]:
    """Hash slot -> the port of the master that serves it (CLUSTER NODES of one node)."""
    client = aioredis.from_url(url)
    try:
        raw = await client.execute_command("CLUSTER", "NODES")
    finally:
        await client.aclose()
    text = raw.decode() if isinstance(raw, bytes) else raw
    out: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if "master" not in fields[2].split(","):
            continue
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for span in fields[8:]:
            start, _, end = span.partition("-")
            for slot in range(int(start), int(end or start) + 1):
                out[slot] = port
    return out


async def segments_on_every_shard(url: str) -> dict[str, int]:
    """One segment per master: segment -> port, chosen (deterministically) by asking the
    cluster which slot each candidate's keys hash to (CLUSTER KEYSLOT) and who serves it."""
    k, by_slot = keys.Keys(), await owners(url)
    client = aioredis.from_url(url)
    chosen: dict[int, str] = {}
    try:
        for i in range(100):
            segment = f"tenant-{i}"
            key = k.sums(k.segment_slot("chat", segment))
            slot = await client.execute_command("CLUSTER", "KEYSLOT", key)
            chosen.setdefault(by_slot[int(slot)], segment)
    finally:
        await client.aclose()
    assert len(chosen) == 3, chosen
    return {segment: port for port, segment in chosen.items()}


async def test_one_policy_s_segments_spread_over_the_shards(cluster_url: str):
    """One policy's segments on three shards (one each): two replicas Route and Feedback
    across them (APPLIED once, DUPLICATE on the other), the sweep expires the unrewarded ones
    with the default reward on whichever shard they wait, and every segment's sums, read
    from the node that serves them (and only there), equal the replay of its rewards."""
    await flush(cluster_url)
    placed = await segments_on_every_shard(cluster_url)
    settings = redis_daemon_settings(cluster_url, cluster=True)
    daemons = [build_daemon(settings) for _ in range(2)]  # type: ignore[arg-type]
    for d in daemons:
        await d.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") for d in daemons]
    stubs = [pb_grpc.RouterStub(c) for c in channels]
    applied: list[tuple[str, Applied]] = []
    unrewarded: list[tuple[str, Applied]] = []

    async def one(i: int) -> None:
        r = random.Random(i)
        segment = sorted(placed)[i % 3]
        x1, x2 = r.choice((-1.0, 0.5, 1.0)), r.choice((-0.5, 0.0, 1.0))
        req = pb.RouteRequest(policy="chat", segment=segment,
                              context=pb.Context(features={"x1": x1, "x2": x2}),
                              candidates=[pb.Candidate(id=a) for a in ARMS])  # fmt: skip
        resp = await stubs[i % 2].Route(req, timeout=10)
        done = Applied(resp.decision_id, resp.arm_id, (1.0, x1, x2), 0.5)
        if i % 5 == 4:
            unrewarded.append((segment, dataclasses.replace(done, reward=0.0)))
            return
        got = await asyncio.gather(*(feedback(s, resp.decision_id, 0.5) for s in stubs))
        assert sorted(got) == [pb.FEEDBACK_STATUS_APPLIED, pb.FEEDBACK_STATUS_DUPLICATE]
        applied.append((segment, done))

    try:
        await asyncio.gather(*(one(i) for i in range(60)))
        specs = daemons[0].router.specs()
        swept = [s for d in daemons for s in await d.store.expire(time.time() + 120, 1000, specs)]
        assert sorted(s.decision_id for s in swept) == sorted(a.decision_id for _, a in unrewarded)
        listed = await daemons[1].store.segments("chat")  # the registry, on the policy's shard
        assert sorted((s.segment, s.version) for s in listed) == [(n, 20) for n in sorted(placed)]
    finally:
        for c in channels:
            await c.close()
        for d in daemons:
            await d.stop(grace_s=0)
    spec = specs["chat"]
    k = keys.Keys()
    for segment, port in placed.items():
        key = k.sums(k.segment_slot("chat", segment))
        holders = []
        for node in set(placed.values()):
            direct = aioredis.from_url(f"redis://127.0.0.1:{node}")
            try:  # SCAN lists this node's own keys (EXISTS would be redirected: MOVED)
                if [found async for found in direct.scan_iter(match=key)]:
                    raw = await direct.hgetall(key)
                    holders.append(node)
            finally:
                await direct.aclose()
        assert holders == [port], (segment, holders)
        memory = InMemoryModelStore()
        for i, (seg, a) in enumerate(applied + unrewarded):
            if seg == segment:
                memory.record_now(PendingDecision(a.decision_id, "chat", seg, a.arm,
                                                  np.array(a.x), 1.0, 0, 0.0, 1e12))  # fmt: skip
                memory.settle_now(a.decision_id, a.reward, float(i), spec)
        want = memory.load_now(ModelKey("chat", segment), ARMS, spec).arms
        stored = {f.decode().split(" ")[1]: codec.decode_sums(v) for f, v in raw.items()}
        assert sum(s.n for s in stored.values()) == 20
        for arm, sums in stored.items():
            w = want[arm]
            assert (sums.n, sums.b.tobytes(), sums.s.tobytes()) == (
                w.n, w.b.tobytes(), w.s.tobytes())  # fmt: skip


async def test_cluster_store_coalesces_concurrent_calls_into_one_pipeline_per_wave(
    cluster_url: str,
):
    """On a Cluster each flush is one redis-py ClusterPipeline (split by node): 12 records of
    three policies (so on different slots, most likely different nodes) started together go
    out in one flush, then their 12 settles in one, all applied."""
    await flush(cluster_url)
    store = RedisModelStore(connect(RedisConnection(cluster_url, timeout_s=2.0, cluster=True)))
    spec = ModelSpec(dim=2, fingerprint="f")
    x = np.array([1.0, 0.5])
    decisions = [
        PendingDecision(
            f"{policy}:{ids.segment_tag('')}-{i:04x}", policy, "", "a", x, 1.0, 0, 1.0, 1e12
        )
        for policy in ("p", "q", "r")
        for i in range(4)
    ]
    try:
        for policy in ("p", "q", "r"):  # each policy registered, both scripts cached
            first = dataclasses.replace(
                decisions[0], decision_id=f"{policy}:000-ffff", policy=policy
            )
            await store.record(first)
            await store.settle(first.decision_id, 0.0, 1.0, spec)
        flushes = store.stats.flushes
        await asyncio.gather(*(store.record(d) for d in decisions))
        settled = await asyncio.gather(
            *(store.settle(d.decision_id, 1.0, 2.0, spec) for d in decisions)
        )
        assert store.stats.flushes == flushes + 2
    finally:
        await store.close()
    assert {s.outcome for s in settled} == {Outcome.APPLIED}
