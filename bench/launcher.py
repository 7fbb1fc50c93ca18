"""Starting and stopping the processes a benchmark talks to (servers on CPU0, clients on CPU1).

Every process started here is stopped by its own handle (SIGTERM, then SIGKILL after a grace),
including on errors, so a bench run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import grpc

ROOT = Path(__file__).resolve().parent.parent  # the repo root: `banditd` imports from this tree
SERVER_CPU, CLIENT_CPU = 0, 1
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def pinning_available() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    """argv run on one CPU with taskset when the machine has 2+ CPUs, else unchanged."""
    return ["taskset", "-c", str(cpu), *argv] if pinning_available() else list(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    return {**os.environ, **CHILD_ENV}


class Process:
    """A background server process; its output goes to a temp file shown if it dies early."""

    def __init__(self, name: str, argv: Sequence[str], cwd: Path = ROOT) -> None:
        self.name = name
        self.argv = list(argv)
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=child_env(), stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self, limit: int = 4000) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return text[-limit:]

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} exited with code {code} before it was ready:\n{self.output()}"
            )

    def wait_until(self, ready: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Poll `ready` until it returns True; on any failure the process is stopped."""
        try:
            ok = self._poll(ready, timeout_s)
        except BaseException:
            self.stop()
            raise
        if not ok:
            text = self.output()
            self.stop()
            raise RuntimeError(f"{self.name} was not ready after {timeout_s:g} s:\n{text}")

    def _poll(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if ready():
                    return True
            except (OSError, grpc.RpcError, grpc.FutureTimeoutError):
                pass
            time.sleep(0.1)
        return False

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """cpu_seconds of `pid` and of every live process below it (a supervisor's workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0.0
    for member in tree:
        try:
            total += cpu_seconds(member)
        except OSError:  # exited meanwhile
            continue
    return total


def grpc_ready(
    address: str,
    probe: Callable[[grpc.Channel], object] | None = None,
    secure: grpc.ChannelCredentials | None = None,
) -> bool:
    """The server at `address` answers (over TLS with `secure`), and `probe` passes."""
    opened = grpc.secure_channel(address, secure) if secure else grpc.insecure_channel(address)
    with opened as channel:
        grpc.channel_ready_future(channel).result(timeout=1.0)
        if probe is not None:
            probe(channel)
    return True


def redis_ready(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def start_redis(directory: Path, cpu: int | None = SERVER_CPU) -> tuple[Process, str]:
    """A throwaway redis-server on a free loopback port, pinned to `cpu` (None: not pinned)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory)]  # fmt: skip
    process = Process("redis-server", argv if cpu is None else pinned(cpu, argv))
    process.wait_until(lambda: redis_ready(port), timeout_s=10)
    return process, f"redis://127.0.0.1:{port}/0"


def run_client(
    args: Sequence[str],
    timeout_s: float = 120.0,
    cpu: int | None = CLIENT_CPU,
    cwd: Path = ROOT,
) -> dict[str, object]:
    """`python -m bench.loadgen ARGS` pinned to `cpu` (the client CPU; None: not pinned), run
    in `cwd` (whose `banditd` it imports: `-m` puts the working directory first on sys.path);
    its JSON result."""
    argv = [sys.executable, "-m", "bench.loadgen", *args]
    argv = argv if cpu is None else pinned(cpu, argv)
    done = subprocess.run(
        argv, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout_s,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"loadgen {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
