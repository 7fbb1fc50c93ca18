"""The processes the chaos scenario breaks: one redis-server with AOF persistence, and banditd
replicas (`python -m banditd serve`), each on free loopback ports, killed and restarted in place
(same port, same data directory or spill file)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from tests.integration.conftest import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")
LIVENESS, READINESS, LEARNING = "", "banditd.v1.Router", "banditd.v1.Learning"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_S = 60.0  # bound on every wait for a condition (the machine is shared: be generous)

# reward_wait_s: no acknowledged decision may expire during a run (the sweeper would apply the
# default reward and answer the late reward NOT_FOUND); the sweeper still runs every 0.2 s.
CONFIG = """\
seed = {seed}
log_level = "warning"
[server]
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"
admin_listen = ""
grace_s = 5
sweep_interval_s = 0.2
[store]
backend = "redis"
[store.redis]
url = "{url}"
health_interval_s = 0.1
spill_path = "{spill}"
[policies.chat]
arms = ["a", "b", "c"]
features.numeric = ["x1", "x2"]
reward_wait_s = 3600
"""

# A killed replica comes back on the same port: clients reconnect within a second.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@contextmanager
def aof_dir(fallback: Path) -> Iterator[Path]:
    """Where redis keeps its append-only file: tmpfs if there is one (as in
    tests/integration/test_redis_faults.py: fsync is cheap, and SIGKILL keeps the page cache)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield fallback
        return
    path = Path(tempfile.mkdtemp(prefix="banditd-chaos-aof-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError(f"not reached within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


def durable_redis(directory: Path) -> RedisServer:
    """A redis-server with `appendfsync always`: every write it acknowledged survives SIGKILL."""
    return RedisServer(directory, DURABLE)


class Replica:
    """One `banditd serve` subprocess; its channel outlives restarts (same port)."""

    def __init__(self, name: str, workdir: Path, redis_url: str, seed: int) -> None:
        self.name = name
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.config = workdir / f"{name}.toml"
        spill = workdir / f"{name}-spill.jsonl"
        self.config.write_text(CONFIG.format(
            seed=seed, port=self.port, metrics_port=self.metrics_port, url=redis_url, spill=spill,
        ))  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", CHANNEL_OPTIONS)
        self.stub = pb_grpc.RouterStub(self.channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(self.channel)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "banditd", "serve", "--config", str(self.config)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def wait_serving(self) -> None:
        async def serving() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            return bool(await self.check(LIVENESS) == SERVING)

        await wait_until(serving, f"{self.name} serving")

    async def check(self, service: str) -> int | None:
        """The health status of `service`, or None if the replica did not answer."""
        try:
            reply = await self.health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
        except grpc.aio.AioRpcError:
            return None
        return int(reply.status)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def stop(self) -> int | None:
        """SIGTERM (graceful shutdown); the exit code, or None if it was not running."""
        if not self.alive:
            return None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return -9

    async def metrics(self) -> dict[str, float]:
        """Its /metrics, sample name -> value (unlabelled samples)."""

        def fetch() -> str:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                return str(reply.read().decode())

        text = await asyncio.to_thread(fetch)
        return {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.labels
        }

    def log_tail(self, lines: int = 8, chars: int = 300) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(line[:chars] for line in text.splitlines()[-lines:])


class LivenessWatch:
    """Asks every running replica's health Check("") (liveness) and "banditd.v1.Router"
    (readiness) every 0.1 s until stopped, and counts the answers."""

    def __init__(self, replicas: list[Replica], phase: Callable[[], str]) -> None:
        self.replicas = replicas
        self.phase = phase
        self.answers: dict[str, Counter[str]] = {r.name: Counter() for r in replicas}
        self.not_serving: list[str] = []  # "r0 liveness NOT_SERVING in <phase>"
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            await asyncio.gather(*(self._ask(r) for r in self.replicas if r.alive))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.1)

    def stop(self) -> None:
        self._stop.set()

    async def _ask(self, replica: Replica) -> None:
        for name, service in (("liveness", LIVENESS), ("readiness", READINESS)):
            status = await replica.check(service)
            if status is None:
                self.answers[replica.name][f"{name} unreachable"] += 1
                continue
            answer = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            self.answers[replica.name][f"{name} {answer}"] += 1
            if status != SERVING:
                self.not_serving.append(f"{replica.name} {name} {answer} in {self.phase()}")
