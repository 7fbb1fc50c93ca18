"""Real parts for integration tests: a redis-server on a free port, an in-process daemon."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import Settings
from banditd.server.app import Daemon, build_daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_ping(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server on port {port} did not answer PING in {timeout_s} s")


def start_redis(
    directory: Path, port: int | None = None, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a throwaway redis-server on loopback (no persistence unless `extra` asks for it:
    later flags win); returns (process, port)."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("BANDITD_REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed (make test installs it)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = port or free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), *extra],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_ping(port, proc, timeout_s=10)
    return proc, port


class RedisServer:
    """A redis-server a test may kill and start again on the same port (with `extra` flags,
    e.g. AOF persistence, each time)."""

    def __init__(self, directory: Path, extra: Sequence[str] = ()) -> None:
        self.directory = directory
        self.extra = tuple(extra)
        self.proc, self.port = start_redis(directory, extra=self.extra)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port and data (blocks until it answers PING)."""
        self.proc, _ = start_redis(self.directory, port=self.port, extra=self.extra)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, one per test session."""
    proc, port = start_redis(tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def daemon_settings(**overrides: object) -> Settings:
    """Settings for an in-process daemon on a free port, with a 'chat' policy of 3 arms."""
    base: dict[str, object] = {
        "seed": 1,
        "server": {
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "admin_listen": "",
            "grace_s": 1.0,
        },
        "policies": {
            "chat": {
                "arms": ["a", "b", "c"],
                "features": {"numeric": ["x1", "x2"]},
                "reward_wait_s": 60,
            }
        },
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    d = build_daemon(daemon_settings())
    await d.start()
    yield d
    await d.stop(grace_s=0)


@pytest.fixture
async def stub(daemon: Daemon) -> AsyncIterator[pb_grpc.RouterStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield pb_grpc.RouterStub(channel)
