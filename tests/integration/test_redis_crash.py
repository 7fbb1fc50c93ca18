"""A daemon replica SIGKILLed mid-load: the others continue and its decisions still join."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import Settings
from banditd.server.app import build_daemon
from banditd.state import codec, keys
from tests.integration.conftest import daemon_settings, free_port
from tests.integration.traffic import (
    Applied,
    assert_state_equals_replay,
    feedback,
    route,
    stored_sums,
)

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 5.0

CONFIG = """
seed = 3
log_level = "warning"
[server]
listen = "127.0.0.1:{port}"
metrics_listen = ""
admin_listen = ""
grace_s = 0
sweep_interval_s = 0.2
[store]
backend = "redis"
[store.redis]
url = "{url}"
health_interval_s = 0.2
[policies.chat]
arms = ["a", "b", "c"]
features.numeric = ["x1", "x2"]
reward_wait_s = {wait}
"""


def settings(url: str) -> Settings:
    """The in-process replica: the same policy as the subprocess ones."""
    return daemon_settings(
        store={"backend": "redis", "redis": {"url": url}},
        policies={"chat": {"arms": ["a", "b", "c"], "features": {"numeric": ["x1", "x2"]},
                           "reward_wait_s": WAIT_S}},
    )  # fmt: skip


def spawn(tmp_path: Path, url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = tmp_path / f"banditd-{port}.toml"
    config.write_text(CONFIG.format(port=port, url=url, wait=WAIT_S))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "banditd", "serve", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, port


async def wait_serving(port: int, proc: subprocess.Popen[bytes]) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(300):
        assert proc.poll() is None, "daemon exited"
        try:
            resp = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return channel
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("daemon did not become ready")


async def pending_decisions(client: aioredis.Redis) -> list[Applied]:
    """Decisions still pending in Redis, as they would be learned with the default reward 0."""
    out = []
    for pattern in keys.Keys().pending_patterns("chat"):
        async for key in client.scan_iter(match=pattern):
            h = await client.hgetall(key)
            x = codec.decode_vector(h[b"x"])
            decision_id = key.decode().rsplit(":pending:", 1)[1]
            out.append(Applied(decision_id, h[b"arm"].decode(), tuple(x.tolist()), 0.0))
    return out


async def defaulted_ids(client: aioredis.Redis) -> set[str]:
    """Decisions the sweepers settled with the default reward (from their tombstones)."""
    out = set()
    for pattern in keys.Keys().tombstone_patterns("chat"):
        async for key in client.scan_iter(match=pattern):
            if await client.hget(key, "outcome") == b"defaulted":
                out.add(key.decode().rsplit(":tomb:", 1)[1])
    return out


async def test_replica_sigkilled_mid_load(redis_url: str, tmp_path: Path):
    """Feedback for the dead replica's decisions joins on the others; expiry applies once."""
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    procs: list[subprocess.Popen[bytes]] = []
    channels: list[grpc.aio.Channel] = []
    survivor = build_daemon(settings(redis_url))
    await survivor.start()
    try:
        proc, port = spawn(tmp_path, redis_url)
        procs.append(proc)
        victim_ch = await wait_serving(port, proc)
        survivor_ch = grpc.aio.insecure_channel(f"127.0.0.1:{survivor.port}")
        channels += [victim_ch, survivor_ch]
        victim, other = pb_grpc.RouterStub(victim_ch), pb_grpc.RouterStub(survivor_ch)
        applied: list[Applied] = []
        held: list[tuple[pb.RouteResponse, tuple]] = []  # routed by the victim, no feedback yet
        stop = asyncio.Event()

        async def settle(decision_id: str, arm: str, x: tuple, reward: float) -> None:
            for stub in (victim, other, other, other):  # the victim may die under us
                try:
                    status = await feedback(stub, decision_id, reward)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise
                    continue
                if status is not None:
                    applied.append(Applied(decision_id, arm, x, reward))
                    return
            raise AssertionError(f"feedback for {decision_id} never joined")

        async def worker(seed: int) -> None:
            rnd = random.Random(seed)
            while not stop.is_set():
                try:
                    resp, x = await route(victim if rnd.random() < 0.7 else other, rnd)
                except grpc.aio.AioRpcError:
                    resp, x = await route(other, rnd)  # the victim is gone
                if rnd.random() < 0.3:
                    held.append((resp, x))
                else:
                    await settle(resp.decision_id, resp.arm_id, x, rnd.choice((0.25, 1.0)))

        workers = [asyncio.create_task(worker(i)) for i in range(6)]
        for _ in range(600):
            if len(applied) >= 40:
                break
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
        # Every decision still pending now (held back, or routed as the victim died), with its
        # x: those that get no reward below are defaulted by a sweeper, whenever that happens.
        unsettled = {a.decision_id: a for a in await pending_decisions(client)}

        # The dead replica's decisions join on the survivor, then on a restarted replica.
        fresh = [(r, x) for r, x in held if r.feedback_deadline_unix_s > time.time() + 1.0]
        assert fresh
        for resp, x in fresh[::2]:
            assert await feedback(other, resp.decision_id, 0.5) == pb.FEEDBACK_STATUS_APPLIED
            applied.append(Applied(resp.decision_id, resp.arm_id, x, 0.5))
        proc2, port2 = spawn(tmp_path, redis_url)
        procs.append(proc2)
        restarted = pb_grpc.RouterStub(ch := await wait_serving(port2, proc2))
        channels.append(ch)
        rnd = random.Random(5)
        for resp, x in fresh[1::2]:
            if resp.feedback_deadline_unix_s > time.time() + 0.5:
                status = await feedback(restarted, resp.decision_id, 0.5)
                assert status == pb.FEEDBACK_STATUS_APPLIED
                applied.append(Applied(resp.decision_id, resp.arm_id, x, 0.5))
        for _ in range(10):  # the restarted replica routes and learns too
            resp, x = await route(restarted, rnd)
            assert await feedback(restarted, resp.decision_id, 1.0) == 1
            applied.append(Applied(resp.decision_id, resp.arm_id, x, 1.0))

        await asyncio.sleep(WAIT_S + 0.3)
        await survivor.sweep_once()  # races the restarted replica's own sweeper
        for _ in range(50):
            if not await pending_decisions(client):
                break
            await asyncio.sleep(0.1)
        assert await pending_decisions(client) == []
    finally:
        for ch in channels:
            await ch.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
        await survivor.stop(grace_s=0)
    sums = await stored_sums(client)
    model = keys.Keys().model(keys.Keys().segment_slot("chat", ""))
    version = int(await client.hget(model, keys.version_field("")) or 0)
    defaulted = await defaulted_ids(client)
    await client.aclose()
    assert defaulted <= set(unsettled), "a decision nobody knew of was defaulted"
    expiring = [unsettled[d] for d in sorted(defaulted)]  # learned with the default reward, 0
    everything = applied + expiring
    assert len({a.decision_id for a in everything}) == len(everything) == version
    assert_state_equals_replay(sums, everything, survivor.router._policies["chat"].spec)
    assert sum(1 for a in everything if a.reward == 0.0) == len(expiring)
