"""`banditd serve` with server.workers = 2 on a real redis-server, as a subprocess.

Connections spread over the two workers (SO_REUSEPORT): every Route+Feedback opens a fresh
channel, so each lands on a worker the kernel picks, and a reward often reaches the other
worker than its decision. Nothing may be lost or doubled: the Redis sums must equal a replay of
the rewards applied, bit for bit (tests/integration/traffic.py). The supervisor's /metrics sums
the workers' counters; SIGTERM stops everything with exit 0 and leaves no process behind; a
worker killed with SIGKILL is restarted while the other one serves on; a configuration error
that only a worker finds ends the daemon with exit 2 and one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.client import AsyncAdminClient
from banditd.server.workers import SUPERVISOR_BYTES
from banditd.sim.traces import logged_rows, read_trace
from banditd.types import ModelSpec
from tests.integration.conftest import free_port, start_redis
from tests.integration.traffic import (
    Applied,
    assert_state_equals_replay,
    feedback,
    route,
    stored_sums,
)

STARTUP_TIMEOUT_S = 60.0
# A channel of its own connection: channels in one process otherwise share grpc's global
# subchannel pool, so every "fresh" channel would ride the same TCP connection to one worker.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
SPEC = ModelSpec(dim=3, fingerprint="")  # the chat policy: bias + x1 + x2 (only n, S, b compared)


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    address: str
    admin: str
    metrics_url: str
    log_path: Path
    trace: Path
    redis_url: str

    def events(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def event(self, name: str, **fields: object) -> list[dict[str, object]]:
        return [
            e
            for e in self.events()
            if e["event"] == name and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, name: str, **fields: object) -> dict[str, object]:
        """The first log event `name` with `fields` (polled; fails after STARTUP_TIMEOUT_S)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.returncode is None:
            if found := self.event(name, **fields):
                return found[0]
            await asyncio.sleep(0.05)
        pytest.fail(f"no {name} {fields} (exit code {self.proc.returncode}):\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8")[-4000:]

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        out = {}
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def children(self) -> set[int]:
        """Every live process whose parent is the supervisor (workers, multiprocessing's
        resource tracker)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) == self.proc.pid:
                        found.add(int(entry.name))
        return found


def metric(m: dict, name: str, **labels: str) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def _config(port: int, admin: int, metrics: int, health: int, url: str, trace: Path) -> str:
    return f"""
log_level = "info"
trace_path = "{trace}"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
metrics_listen = "127.0.0.1:{metrics}"
health_listen = "127.0.0.1:{health}"
workers = 2
grace_s = 10
drain_idle_s = 0.5
[store]
backend = "redis"
[store.redis]
url = "{url}"
timeout_s = 5
[policies.chat]
arms = ["a", "b", "c"]
features.numeric = ["x1", "x2"]
reward_wait_s = 600
"""


async def start(tmp_path: Path, url: str, *flags: str) -> Served:
    port, admin, metrics, health = (free_port() for _ in range(4))
    trace = tmp_path / "trace" / "trace.jsonl"
    config = tmp_path / "banditd.toml"
    config.write_text(_config(port, admin, metrics, health, url, trace), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITD_")}
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "banditd", "serve", "--config", str(config), *flags,
            env=env, cwd=tmp_path, stdout=log_file, stderr=log_file,
        )  # fmt: skip
    return Served(proc, f"127.0.0.1:{port}", f"127.0.0.1:{admin}",
                  f"http://127.0.0.1:{metrics}/metrics", log_path, trace, url)  # fmt: skip


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """Two workers serving, on a redis-server of their own."""
    redis, redis_port = start_redis(tmp_path)
    daemon = None
    try:
        daemon = await start(tmp_path, f"redis://127.0.0.1:{redis_port}/0")
        await daemon.wait_for("supervisor.serving")
        yield daemon
    finally:
        if daemon is not None and daemon.proc.returncode is None:
            for pid in daemon.children():  # nothing outlives the test, whatever failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            daemon.proc.kill()
            await daemon.proc.wait()
        redis.terminate()
        redis.wait(timeout=10)


async def round_trips(address: str, n: int, seed: int) -> tuple[list[Applied], int]:
    """n Route+Feedback, each on fresh channels (about 1 in 3 rewards also sent a second time,
    concurrently, on another fresh channel): (the rewards applied, duplicates answered)."""
    applied: list[Applied] = []
    duplicates = 0
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        nonlocal duplicates
        rnd = random.Random(seed * 100_000 + i)
        async with gate:
            async with grpc.aio.insecure_channel(address, OWN_CONNECTION) as channel:
                resp, x = await route(pb_grpc.RouterStub(channel), rnd)
            reward = rnd.choice((0.0, 0.25, 0.5, 1.0))
            copies = 2 if rnd.random() < 0.3 else 1
            channels = [grpc.aio.insecure_channel(address, OWN_CONNECTION) for _ in range(copies)]
            try:
                got = await asyncio.gather(
                    *(feedback(pb_grpc.RouterStub(c), resp.decision_id, reward) for c in channels)
                )
            finally:
                for c in channels:
                    await c.close()
            assert (
                sorted(got) == [pb.FEEDBACK_STATUS_APPLIED, pb.FEEDBACK_STATUS_DUPLICATE][:copies]
            ), got
            duplicates += copies - 1
            applied.append(Applied(resp.decision_id, resp.arm_id, x, reward))

    await asyncio.gather(*(one(i) for i in range(n)))
    return applied, duplicates


async def stop(daemon: Served, sig: int = signal.SIGTERM) -> int:
    """Signal the supervisor; its exit code, once every process it started has exited."""
    children = daemon.children()
    assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
    daemon.proc.send_signal(sig)
    code = await asyncio.wait_for(daemon.proc.wait(), timeout=60)
    for _ in range(600):  # up to 30 s: the workers drain, the resource tracker sees EOF
        if not (alive := [p for p in children if _running(p)]):
            break
        await asyncio.sleep(0.05)
    assert not alive, f"processes left behind: {alive}"
    return code


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (its parent is gone, not reaped yet)


async def check_exactly_once(daemon: Served, applied: list[Applied]) -> None:
    client = aioredis.from_url(daemon.redis_url)
    try:
        assert_state_equals_replay(await stored_sums(client), applied, SPEC)
    finally:
        await client.aclose()
    async with AsyncAdminClient(daemon.admin) as admin:  # worker 0's Admin listener
        state = await admin.export_policy("chat")
    assert sum(a.n for a in state.arms) == len(applied)


@pytest.mark.timeout(120)
async def test_two_workers_share_the_port_and_apply_every_reward_exactly_once(
    served: Served,
) -> None:
    """Both workers serve; every decision is applied once (sums == replay, Admin's n); the
    supervisor's /metrics sums both workers; SIGTERM: exit 0, no process left."""
    applied, duplicates = await round_trips(served.address, 200, seed=1)
    assert len(applied) == 200
    assert duplicates > 0
    await check_exactly_once(served, applied)

    m = served.metrics()
    assert metric(m, "banditd_rpc_requests_total", rpc="Route", code="OK") == 200
    assert metric(m, "banditd_rpc_requests_total", rpc="Feedback", code="OK") == 200 + duplicates
    assert metric(m, "banditd_feedback_outcomes_total", outcome="applied") == 200
    assert metric(m, "banditd_feedback_outcomes_total", outcome="duplicate") == duplicates
    assert metric(m, "banditd_decisions_total", policy="chat") == 200
    served_by = [metric(m, "banditd_worker_rpcs_total", worker=w) for w in ("0", "1")]
    assert all(n > 0 for n in served_by), served_by  # the kernel spread the connections
    assert sum(served_by) == 400 + duplicates
    assert metric(m, "banditd_workers") == 2
    for w in ("0", "1", "supervisor"):
        assert metric(m, "process_resident_memory_bytes", worker=w) > 0
    # what `auto` counts for the supervisor when it sizes workers by the memory limit
    assert metric(m, "process_resident_memory_bytes", worker="supervisor") <= SUPERVISOR_BYTES

    assert await stop(served) == 0
    decisions = {w: [r for r in read_trace(Path(f"{served.trace}.w{w}")) if r["type"] ==
                     "decision"] for w in "01"}  # fmt: skip
    assert all(decisions.values()), {w: len(d) for w, d in decisions.items()}
    _, rows = logged_rows(served.trace, "chat")  # the two files read as one trace
    assert len(rows) == 200
    assert sorted(r[2] for r in rows) == sorted(a.reward for a in applied)
    events = served.events()
    assert not [e for e in events if e.get("level") in {"error", "critical"}]
    assert [e["worker"] for e in events if e["event"] == "server.drained"] in ([0, 1], [1, 0])


@pytest.mark.timeout(120)
async def test_a_killed_worker_is_restarted_while_the_other_serves(served: Served) -> None:
    """SIGKILL worker 1: the supervisor logs it, counts a restart and starts a new one; calls
    made meanwhile are answered; the pod's counters do not go back; still exactly once. Then
    SIGKILL the supervisor: the workers drain and exit by themselves."""
    applied, _ = await round_trips(served.address, 40, seed=2)
    before = metric(served.metrics(), "banditd_rpc_requests_total", rpc="Route", code="OK")
    assert before == 40
    (first,) = served.event("worker.spawned", worker=1)
    os.kill(int(first["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    died = await served.wait_for("worker.exited", worker=1)
    assert died["reason"] == "was killed by SIGKILL"
    more, _ = await round_trips(served.address, 20, seed=3)  # worker 0, or the new worker 1
    second = await served.wait_for("worker.spawned", worker=1, restarts=1)
    await served.wait_for("worker.serving", worker=1, pid=second["pid"])
    again, _ = await round_trips(served.address, 20, seed=4)

    m = served.metrics()
    assert metric(m, "banditd_worker_restarts_total", worker="1") == 1
    assert metric(m, "banditd_worker_restarts_total", worker="0") == 0
    assert metric(m, "banditd_worker_up", worker="1") == 1
    assert metric(m, "banditd_rpc_requests_total", rpc="Route", code="OK") == 80
    await check_exactly_once(served, applied + more + again)
    # The supervisor killed outright forwards nothing; PR_SET_PDEATHSIG stops each worker.
    assert await stop(served, signal.SIGKILL) == -signal.SIGKILL
    assert sorted(int(e["worker"]) for e in served.event("server.stopped")) == [0, 1]  # type: ignore[call-overload]


@pytest.mark.timeout(60)
async def test_a_config_error_only_a_worker_finds_ends_the_daemon_with_one_line(
    tmp_path: Path,
) -> None:
    """The tokens file is read by each worker at its start: exit 2, the message once on
    stderr's last line, no restart loop, no process left."""
    daemon = await start(tmp_path, "redis://127.0.0.1:1/0", "--auth.tokens_file",
                         str(tmp_path / "missing-tokens"))  # fmt: skip
    code = await asyncio.wait_for(daemon.proc.wait(), timeout=50)
    assert code == 2, daemon.tail()
    lines = daemon.log_path.read_text(encoding="utf-8").splitlines()
    message = f"banditd: auth.tokens_file: cannot read {tmp_path / 'missing-tokens'}"
    assert [line for line in lines if line.startswith("banditd:")] == [
        message + ": No such file or directory"
    ]
    assert not daemon.event("worker.spawned", restarts=1)
