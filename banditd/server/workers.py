"""Worker processes (`server.workers`): how many, what each one serves, and a worker's life.

With `server.workers = N > 1`, `banditd serve` is a supervisor (server/supervisor.py) that
spawns N worker processes. Each worker is the ordinary daemon (server/app.py `serve`) with a
`WorkerRole`, and differs from a single daemon only in what this module decides:

- the Router listener (`server.listen`) and the probes' listener (`server.health_listen`) are
  bound by every worker with SO_REUSEPORT: the kernel spreads connections over the workers, and
  each worker answers health for itself (docs/deploy.md, "Worker processes");
- Admin (`server.admin_listen`) is served by worker 0 alone (a Unix socket cannot be shared;
  what Admin changes reaches the other workers through Redis, as it reaches other replicas);
- /metrics is the supervisor's: a worker answers its scrapes over a pipe (`answer_scrapes`);
- the trace and the outage spill file are per worker (`<path>.w<i>`), the exploration RNG is
  seeded with (seed, i).

Workers share state only through Redis, so the memory store is refused for N > 1. Workers are
started with multiprocessing's "spawn" (a fresh interpreter: grpc must not cross a fork), so
the supervisor never needs grpc itself. This module and the supervisor hold a Settings: they
are part of the composition root, with cli.py and server/app.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from banditd.config import Settings
from banditd.errors import ConfigError
from banditd.server.cgroup import memory_limit, usable_cpus

_WORKER_FILE = re.compile(r"\.w(\d+)")  # the suffix of a worker's trace or spill file
# The supervisor's own memory: Python, pydantic, numpy (config), prometheus-client, structlog.
# Measured 73-75 MiB RSS (docs/deploy.md, "Worker processes").
SUPERVISOR_BYTES = 80 << 20


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Worker `index` of `count` (0-based)."""

    index: int
    count: int

    def path(self, path: str) -> str:
        """This worker's own file for a per-process file `path` ('' stays '')."""
        return worker_path(path, self.index) if path else ""


def worker_path(path: str, index: int) -> str:
    return f"{path}.w{index}"


# -- how many -------------------------------------------------------------------------------------
def worker_count(
    settings: Settings,
    cpus: Callable[[], int] = usable_cpus,
    memory_bytes: Callable[[], int | None] = memory_limit,
) -> int:
    """How many workers `serve` starts; a ConfigError for what N > 1 cannot serve.

    `auto` is the usable CPUs, but no more workers than the container's memory limit holds at
    the bounds' worst case (sizing.py, per worker, plus the supervisor): a pod without a CPU
    limit on a large node must not start a worker per node CPU into an OOM kill. On the memory
    store `auto` is 1: its state lives in one process (not a refusal, so one config works on
    either store)."""
    server = settings.server
    memory = settings.store.backend == "memory"
    if server.workers != "auto":
        count = server.workers
    elif memory:
        count = 1
    else:
        count = cpus()
        limit, each = memory_bytes(), settings.memory_estimate()["total"]
        if count > 1 and limit is not None and each is not None:
            count = max(1, min(count, (limit - SUPERVISOR_BYTES) // each))
    if count == 1:
        return 1
    if memory:
        raise ConfigError(
            f"server.workers = {count} needs store.backend = 'redis': the memory store's models"
            " and pending decisions live in one process, which other workers cannot see (set"
            " server.workers = 1, or share state in Redis)"
        )
    for name in ("listen", "health_listen"):
        address = getattr(server, name)
        if address.startswith("unix:"):
            raise ConfigError(
                f"server.{name} = {address!r}: {count} workers cannot share a Unix socket (one"
                " would take the path from the others); use host:port, or server.workers = 1"
            )
        if address and address.rpartition(":")[2] == "0":
            raise ConfigError(
                f"server.{name} = {address!r}: port 0 would give each of the {count} workers a"
                " port of its own; name the port, or set server.workers = 1"
            )
    return count


# -- what each serves ---------------------------------------------------------------------------
def worker_settings(settings: Settings, role: WorkerRole) -> Settings:
    """The settings worker `role` runs with: its own trace and spill files, no /metrics."""
    redis = settings.store.redis
    store = settings.store.model_copy(
        update={"redis": redis.model_copy(update={"spill_path": role.path(redis.spill_path)})}
    )
    return settings.model_copy(
        update={
            "trace_path": role.path(settings.trace_path),
            "server": settings.server.model_copy(update={"metrics_listen": ""}),
            "store": store,
        }
    )


def adopted_files(path: str, index: int, count: int, names: Iterable[str]) -> list[str]:
    """The per-process files (spill files) that worker `index` of `count` takes over: those a
    run with another worker count left, each given to exactly one worker. `names` are the
    entries of path's directory. The single daemon (count 1) owns `path` itself; worker i of
    N > 1 owns `path.w<i>`. Others: `path` goes to worker 0, `path.w<j>` to worker j mod N."""
    base = Path(path).name
    out = []
    for name in sorted(names):
        if name == base:
            owner = 0 if count > 1 else -1  # the single daemon's own file: not adopted
        elif name.startswith(base) and (m := _WORKER_FILE.fullmatch(name[len(base) :])):
            j = int(m.group(1))
            owner = -1 if count > 1 and j < count else j % count
        else:
            continue
        if owner == index:
            out.append(str(Path(path).with_name(name)))
    return out


def spill_adoptions(path: str, role: WorkerRole | None) -> tuple[str, ...]:
    """adopted_files for a spill path ('' = none) as the daemon `role` (None: single)."""
    if not path:
        return ()
    try:
        names = os.listdir(Path(path).parent)
    except OSError:
        return ()
    index, count = (0, 1) if role is None else (role.index, role.count)
    return tuple(adopted_files(path, index, count, names))


# -- a worker's life (runs in the spawned child) ----------------------------------------------
@dataclass(frozen=True)
class WorkerSpec:
    """What the supervisor hands a worker (pickled by multiprocessing's spawn)."""

    settings: Settings  # the merged settings, as plain Settings (worker_settings not applied)
    role: WorkerRole
    parent_pid: int
    events: Connection  # worker -> supervisor: ("started",) or ("failed", exit code, message)
    scrapes: Connection  # supervisor -> worker "scrape"; worker -> supervisor: exposition bytes


def worker_main(spec: WorkerSpec) -> None:
    """The entry point of a worker process: serve until SIGTERM; exit 2 on a ConfigError."""
    _die_with_parent(spec.parent_pid)
    from banditd.logs import configure_logging
    from banditd.server.app import serve

    settings = worker_settings(spec.settings, spec.role)
    configure_logging(settings.log_level, settings.log_format, worker=spec.role.index)
    reporter = Reporter(spec)
    try:
        asyncio.run(serve(settings, spec.role, reporter.started))
    except ConfigError as exc:
        reporter.failed(2, str(exc))
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C reached the whole process group before serve's handler
        sys.exit(130)
    except BaseException as exc:
        if not reporter.has_started:
            what = f"{type(exc).__name__}: {exc}"
            reporter.failed(1, f"worker {spec.role.index} failed to start: {what}")
        raise


class Reporter:
    """Tells the supervisor the worker serves (and from then on answers its scrapes), or why
    it could not start."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._spec = spec
        self.has_started = False

    def started(self, registry: object) -> None:
        from prometheus_client import CollectorRegistry

        assert isinstance(registry, CollectorRegistry)
        self.has_started = True
        threading.Thread(
            target=answer_scrapes, args=(self._spec.scrapes, registry), daemon=True,
            name="banditd-scrapes",
        ).start()  # fmt: skip
        self._send(("started",))

    def failed(self, code: int, message: str) -> None:
        self._send(("failed", code, message))

    def _send(self, message: tuple[object, ...]) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone; PDEATHSIG stops us
            self._spec.events.send(message)


def answer_scrapes(conn: Connection, registry: object) -> None:
    """Answer each scrape request with the registry's exposition text, until the pipe closes.
    Runs in a thread: the collectors only read counters the event loop keeps (metrics.py)."""
    from prometheus_client import CollectorRegistry, generate_latest

    assert isinstance(registry, CollectorRegistry)
    while True:
        try:
            conn.recv()
            conn.send_bytes(generate_latest(registry))
        except (EOFError, OSError):
            return


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM this worker (a graceful drain) if the supervisor dies, even by SIGKILL. (Linux
    sends it when the thread that started us ends: the supervisor starts workers from its main
    thread only.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
