"""The Redis store against a 3-node Redis Cluster (policies land on different slots)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from redis.asyncio.cluster import RedisCluster

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import build_daemon
from banditd.state.connection import RedisConnection, connect
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_store import RedisModelStore
from banditd.types import ModelSpec, Outcome, PendingDecision
from tests.integration.conftest import start_redis
from tests.integration.test_redis_store import run_table
from tests.integration.traffic import (
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


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three redis-server masters joined by `redis-cli --cluster create` on free ports."""
    procs, ports = [], []
    try:
        for i in range(3):
            d = tmp_path_factory.mktemp(f"cluster{i}")
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


async def flush(url: str) -> None:
    client = RedisCluster.from_url(url)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    await client.aclose()


async def test_cluster_store_matches_memory_store_on_settle_expire_table(cluster_url: str):
    """The contract table gives the same answers on a Redis Cluster."""
    await flush(cluster_url)
    store = RedisModelStore(connect(RedisConnection(cluster_url, timeout_s=2.0, cluster=True)))
    try:
        got = await run_table(store)
    finally:
        await store.close()
    want = await run_table(InMemoryModelStore())
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
        PendingDecision(f"{policy}:{i:04x}", policy, "", "a", x, 1.0, 0, 1.0, 1e12)
        for policy in ("p", "q", "r")
        for i in range(4)
    ]
    try:
        for policy in ("p", "q", "r"):  # each policy registered, both scripts cached
            first = dataclasses.replace(decisions[0], decision_id=f"{policy}:ffff", policy=policy)
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
