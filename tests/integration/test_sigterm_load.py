"""SIGTERM under load: `banditd serve` in a subprocess drains every RPC in flight, on both stores.

A client keeps 64 Route and Feedback RPCs in flight (each of 64 workers starts its next call as
soon as the last one answers), SIGTERM arrives, the workers start nothing new, and every call
that was in flight must come back OK. Before the drain fix, grpc.aio's server.stop() cancelled
the calls its transport had received but no handler had picked up yet: 53-59 of the 64
came back CANCELLED. drain_delay_s is 0 here (the default), so nothing but the drain saves
them. drain_idle_s is 2 s (the default is 0.25 s), so a pause of a loaded machine is not taken
for the end of the traffic.
With server.workers = 2 the client spreads its calls over 32 connections (so both workers
have calls in flight); the supervisor forwards SIGTERM and each worker drains its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from tests.integration.conftest import free_port, start_redis

IN_FLIGHT = 64
WARM_UP_CALLS = 1000  # steady state before SIGTERM
GRACE_S = 20.0
STARTUP_TIMEOUT_S = 60.0
ROUTE = pb.RouteRequest(
    policy="chat",
    context=pb.Context(features={"x1": 0.5, "x2": -1.0}),
    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
)


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    address: str
    log_path: Path
    workers: bool = False  # server.workers = 2

    def events(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def _config(port: int, store: str) -> str:
    return f"""
log_level = "info"
[server]
listen = "127.0.0.1:{port}"
metrics_listen = ""
admin_listen = ""
grace_s = {GRACE_S}
drain_delay_s = 0
drain_idle_s = 2
{store}
[policies.chat]
arms = ["a", "b", "c"]
features.numeric = ["x1", "x2"]
reward_wait_s = 600
"""


async def _wait_serving(daemon: Daemon, workers: bool) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while workers and "supervisor.serving" not in daemon.log_path.read_text(encoding="utf-8"):
        if loop.time() > deadline or daemon.proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    async with grpc.aio.insecure_channel(daemon.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while loop.time() < deadline and daemon.proc.returncode is None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    log = daemon.log_path.read_text(encoding="utf-8")
    pytest.fail(f"daemon not SERVING (exit code {daemon.proc.returncode}); log:\n{log}")


@pytest.fixture(params=["memory", "redis", "redis, 2 workers"])
async def daemon(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Daemon]:
    """`python -m banditd serve --config <toml>` on a free port, memory or Redis store (with
    server.workers = 2)."""
    store = '[store]\nbackend = "memory"'
    redis = None
    workers = request.param == "redis, 2 workers"
    if request.param.startswith("redis"):
        redis, redis_port = start_redis(tmp_path)
        store = (
            f'[store]\nbackend = "redis"\n[store.redis]\nurl = "redis://127.0.0.1:{redis_port}/0"'
            "\ntimeout_s = 5"  # the drain is under test, not Redis latency on a loaded machine
        )
    proc = None
    try:  # nothing started here outlives the test, whatever fails
        port = free_port()
        config = tmp_path / "banditd.toml"
        config.write_text(_config(port, store), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITD_")}
        log_path = tmp_path / "daemon.log"
        flags = ["--server.workers", "2"] if workers else []
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "banditd", "serve", "--config", str(config), *flags,
                env=env, cwd=tmp_path, stdout=log_file, stderr=log_file,
            )  # fmt: skip
        running = Daemon(proc, f"127.0.0.1:{port}", log_path, workers)
        await _wait_serving(running, workers)
        yield running
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)


@pytest.mark.timeout(120)
async def test_sigterm_drains_every_rpc_in_flight(daemon: Daemon) -> None:
    """64 Route/Feedback RPCs in flight at SIGTERM all complete OK; the daemon exits 0."""
    codes: collections.Counter[str] = collections.Counter()
    terminated = asyncio.Event()
    warm = asyncio.Event()
    outstanding = 0

    async def call(rpc: Awaitable[Any]) -> Any:
        nonlocal outstanding
        outstanding += 1
        try:
            reply = await rpc
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            return None
        finally:
            outstanding -= 1
        codes["OK"] += 1
        if codes["OK"] >= WARM_UP_CALLS:
            warm.set()
        return reply

    async def worker(stub: pb_grpc.RouterStub) -> None:
        """Route, then Feedback for that decision, and again, until SIGTERM has been sent."""
        while not terminated.is_set():
            decision = await call(stub.Route(ROUTE, timeout=30))
            if decision is None or terminated.is_set():
                return
            feedback = pb.FeedbackRequest(decision_id=decision.decision_id, reward=1.0)
            await call(stub.Feedback(feedback, timeout=30))

    # With workers, 32 connections (a channel each: channels otherwise share one connection),
    # so that both workers get some (all 32 on one worker: a chance of 2^-31).
    own = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(daemon.address, own if daemon.workers else None)
        for _ in range(32 if daemon.workers else 1)
    ]
    try:
        stubs = [pb_grpc.RouterStub(c) for c in channels]
        workers = [asyncio.create_task(worker(stubs[i % len(stubs)])) for i in range(IN_FLIGHT)]
        await asyncio.wait_for(warm.wait(), timeout=60)
        assert codes == {"OK": codes["OK"]}, codes  # nothing failed before SIGTERM
        before = codes["OK"]
        in_flight = outstanding  # every worker is awaiting a call: this task runs between them
        daemon.proc.send_signal(signal.SIGTERM)
        terminated.set()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=GRACE_S + 30)
        rc = await asyncio.wait_for(daemon.proc.wait(), timeout=GRACE_S + 30)
    finally:
        for c in channels:
            await c.close()

    after = dict(codes - collections.Counter({"OK": before}))
    assert in_flight == IN_FLIGHT
    assert after == {"OK": IN_FLIGHT}, f"the {IN_FLIGHT} RPCs in flight at SIGTERM ended {after}"
    assert rc == 0
    events = [e["event"] for e in daemon.events()]
    assert events.index("server.stopping") < events.index("server.drained"), events[-10:]
    if daemon.workers:  # both served calls, both drained
        served = {e["worker"] for e in daemon.events() if e["event"] == "rpc.completed"}
        drained = [e["worker"] for e in daemon.events() if e["event"] == "server.quiesced"]
        assert served == {0, 1}
        assert sorted(drained) == [0, 1]  # type: ignore[type-var]
    assert not [e for e in daemon.events() if e.get("level") in {"error", "critical"}]
