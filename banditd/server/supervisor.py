"""The supervisor of `server.workers = N > 1` worker processes (workers.py: what each serves).

`banditd serve` with N > 1 runs `Supervisor.run`, which:
1. checks the shared ports are free (binding with SO_REUSEPORT would otherwise join, silently,
   another process of ours that listens there), and serves /metrics for the pod: each worker's
   scrape, merged (pod_metrics.py), plus the workers' own series;
2. spawns the N workers (multiprocessing "spawn": fresh interpreters, no grpc across a fork;
   the supervisor itself never imports grpc) and waits until each serves. A worker that exits
   before it serves ends the daemon: the others are stopped and the supervisor exits with that
   worker's code (2 and its one-line message for a configuration error), never a restart loop;
3. restarts a worker that dies after it served, after a backoff (0.5 s, doubling up to 30 s;
   back to 0.5 s once the worker had served 60 s), counted in banditd_worker_restarts_total and
   logged (worker.exited, then worker.spawned);
4. on SIGTERM or SIGINT, forwards the signal to every worker, each of which drains as a single
   daemon does (app.py `Daemon.stop`), and exits when all have exited: 0 if each exited 0.
   A worker still running drain_delay_s + grace_s + 10 s later is killed (exit 1).
If the supervisor itself is killed, each worker gets SIGTERM (PR_SET_PDEATHSIG) and drains.
"""

from __future__ import annotations

import contextlib
import errno
import math
import multiprocessing
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from banditd.config import Settings
from banditd.errors import ConfigError
from banditd.server.cgroup import memory_limit
from banditd.server.metrics import serve_metrics
from banditd.server.pod_metrics import Retired, merge, parse, rpcs_answered
from banditd.server.workers import WorkerRole, WorkerSpec, worker_main

log = structlog.get_logger("banditd.supervisor")

BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a worker that served this long before dying restarts after BACKOFF_S again
SCRAPE_TIMEOUT_S = 2.0
KILL_MARGIN_S = 10.0


@dataclass
class _Worker:
    """One life of worker `index` (a restart is a new _Worker)."""

    index: int
    process: BaseProcess
    events: Connection  # worker -> supervisor
    scrapes: Connection  # request/response
    scrape_lock: threading.Lock = field(default_factory=threading.Lock)
    served_at: float | None = None
    failure: tuple[int, str] | None = None
    last: list[Metric] | None = None  # its last scrape
    events_open: bool = True
    stale_replies: int = 0  # scrapes that timed out: their late replies are skipped


class Supervisor:
    """Runs `count` workers of `settings` until SIGTERM/SIGINT; see the module docstring."""

    def __init__(self, settings: Settings, count: int) -> None:
        # A plain Settings (load_settings' is a local subclass, which pickle refuses).
        self._settings = Settings.model_validate(settings.model_dump())
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._lock = threading.Lock()  # _workers, each .last, _retired, _answered: vs scrapes
        self._retired = Retired()
        self._answered = dict.fromkeys(range(count), 0.0)  # RPCs of dead lives, per index
        self._restarts = dict.fromkeys(range(count), 0)
        self._backoffs = dict.fromkeys(range(count), 0)
        self._restart_at: dict[int, float] = {}
        self._signals: list[int] = []
        self._stopping_since: float | None = None
        self._failure: tuple[int, str] | None = None
        self._exit_code = 0
        self._own = CollectorRegistry()  # the supervisor's process_* and python_* series
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self._own)
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.metrics_port: int | None = None

    # -- running ----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; the exit code. A ConfigError (one line) if the ports are taken
        or a worker found the configuration wrong at its start."""
        server = self._settings.server
        for name in ("listen", "health_listen"):
            check_free(name, getattr(server, name))
        tls = server.tls if server.metrics_tls else None
        try:
            http = serve_metrics(
                server.metrics_listen, self.registry, tls.cert_file if tls else None,
                tls.key_file if tls else None,
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(f"cannot serve /metrics on {server.metrics_listen}: {exc}") from None
        self.metrics_port = http.server_port if http is not None else None
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        previous_fd = signal.set_wakeup_fd(wake_w.fileno())
        try:
            self._log_start()
            for index in range(self._count):
                self._spawn(index)
            self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
            if http is not None:
                http.shutdown()
                http.server_close()
        if self._failure is not None:
            code, message = self._failure
            if code == 2:
                raise ConfigError(message)
            print(f"banditd: {message}", file=sys.stderr)
            return code
        log.info("supervisor.stopped", exit_code=self._exit_code)
        return self._exit_code

    def _loop(self, wake: socket.socket) -> None:
        while self._workers or (self._restart_at and self._stopping_since is None):
            timeout = self._next_deadline() - time.monotonic()
            waitables: list[object] = [wake]
            for w in self._workers.values():
                waitables.append(w.process.sentinel)
                if w.events_open:
                    waitables.append(w.events)
            ready = wait_for(waitables, None if math.isinf(timeout) else max(timeout, 0.0))  # type: ignore[arg-type]
            if wake in ready:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    wake.recv(4096)
            while self._signals:
                self._stop(self._signals.pop(0))
            for w in list(self._workers.values()):
                if w.events in ready or not w.process.is_alive():
                    self._read_events(w)
                if not w.process.is_alive():
                    self._exited(w)
            self._due()

    def _next_deadline(self) -> float:
        deadline = min(self._restart_at.values(), default=math.inf)
        if self._stopping_since is not None:
            s = self._settings.server
            deadline = self._stopping_since + s.drain_delay_s + s.grace_s + KILL_MARGIN_S
        return deadline

    def _due(self) -> None:
        now = time.monotonic()
        if self._stopping_since is None:
            for index, at in list(self._restart_at.items()):
                if at <= now:
                    del self._restart_at[index]
                    self._spawn(index)
        elif now >= self._next_deadline():
            for w in list(self._workers.values()):
                log.error("worker.killed", worker=w.index, pid=w.process.pid,
                          hint="it did not exit within drain_delay_s + grace_s + 10 s")  # fmt: skip
                w.process.kill()
                w.process.join(5)
                self._exited(w)
            self._exit_code = 1

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)  # handled by the loop (the wakeup fd wakes it)

    def _stop(self, signum: int) -> None:
        """Forward `signum` to every worker; the first one starts the shutdown."""
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            self._restart_at.clear()
            log.info("supervisor.stopping", signal=signal.Signals(signum).name,
                     workers=len(self._workers))  # fmt: skip
        for w in self._workers.values():
            if w.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.process.pid, signum)

    # -- one worker ---------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        events, events_child = self._context.Pipe(duplex=False)
        scrapes, scrapes_child = self._context.Pipe()
        spec = WorkerSpec(self._settings, WorkerRole(index, self._count), os.getpid(),
                          events_child, scrapes_child)  # fmt: skip
        process = self._context.Process(
            target=worker_main, args=(spec,), name=f"banditd-worker-{index}"
        )
        process.start()
        events_child.close()
        scrapes_child.close()
        with self._lock:
            self._workers[index] = _Worker(index, process, events, scrapes)
        log.info("worker.spawned", worker=index, pid=process.pid, restarts=self._restarts[index])

    def _read_events(self, w: _Worker) -> None:
        while w.events_open:
            try:
                if not w.events.poll():
                    return
                message = w.events.recv()
            except (EOFError, OSError):
                w.events_open = False
                return
            if message[0] == "started":
                w.served_at = time.monotonic()
                log.info("worker.serving", worker=w.index, pid=w.process.pid)
                if len(self._workers) == self._count and all(
                    v.served_at is not None for v in self._workers.values()
                ):
                    log.info("supervisor.serving", workers=self._count,
                             metrics_port=self.metrics_port)  # fmt: skip
            elif message[0] == "failed":
                w.failure = (int(message[1]), str(message[2]))

    def _exited(self, w: _Worker) -> None:
        code = w.process.exitcode
        with self._lock:
            self._workers.pop(w.index, None)
            if w.last is not None:
                self._retired.retire(w.last)
                self._answered[w.index] += rpcs_answered(w.last)
        with w.scrape_lock:
            w.events.close()
            w.scrapes.close()
        stopping = self._stopping_since is not None
        if w.failure is not None or (w.served_at is None and not stopping):
            failure = w.failure or (1, f"worker {w.index} {_describe(code)} before it served")
            log.error("worker.start_failed", worker=w.index, exit_code=code, error=failure[1])
            if self._failure is None:
                self._failure = failure
            self._stop(signal.SIGTERM)
            return
        if stopping:
            stopped_early = (-signal.SIGTERM, -signal.SIGINT, 130)  # before serve's handlers
            clean = code == 0 or (w.served_at is None and code in stopped_early)
            log.log(20 if clean else 40, "worker.stopped", worker=w.index, exit_code=code)
            if not clean:
                self._exit_code = 1
            return
        assert w.served_at is not None
        served_s = time.monotonic() - w.served_at
        if served_s >= STABLE_S:
            self._backoffs[w.index] = 0
        delay = min(BACKOFF_S * 2 ** self._backoffs[w.index], MAX_BACKOFF_S)
        self._backoffs[w.index] += 1
        self._restarts[w.index] += 1
        self._restart_at[w.index] = time.monotonic() + delay
        log.error("worker.exited", worker=w.index, pid=w.process.pid, exit_code=code,
                  reason=_describe(code), served_s=round(served_s, 3),
                  restart_in_s=delay)  # fmt: skip

    def _log_start(self) -> None:
        per_worker = self._settings.memory_estimate()["total"]
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
        total = None if per_worker is None else self._count * per_worker + own
        limit = memory_limit()
        log.info("supervisor.started", pid=os.getpid(), workers=self._count,
                 workers_setting=self._settings.server.workers)  # fmt: skip
        fields = {
            "workers": self._count, "limit_mib": _mib(limit), "per_worker_mib": _mib(per_worker),
            "supervisor_mib": _mib(own), "total_mib": _mib(total),
        }  # fmt: skip
        if total is None or (limit is not None and total > limit):
            log.warning("server.memory_over_limit", **fields,
                        hint="fewer workers, lower the bounds (docs/deploy.md), or raise the"
                        " container's memory limit")  # fmt: skip
        else:
            log.info("server.memory_budget", **fields)

    # -- /metrics ---------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """The pod's families: the workers' merged, the supervisor's own, the workers'."""
        with self._lock:
            lives = list(self._workers.values())
        answered = {w.index: self._scrape(w) for w in lives}
        with self._lock:
            sources: dict[str, list[Metric]] = {"supervisor": list(self._own.collect())}
            rpcs = dict(self._answered)
            for w in self._workers.values():
                if w.last is not None:
                    sources[str(w.index)] = w.last
                    rpcs[w.index] += rpcs_answered(w.last)
            families = list(merge(sources, self._retired))
            up = {i: bool(answered.get(i)) and i in self._workers for i in range(self._count)}
        yield from families
        yield from worker_families(self._count, up, dict(self._restarts), rpcs)

    def _scrape(self, w: _Worker) -> bool:
        """Ask worker `w` for its exposition (stored in w.last); False if it did not answer."""
        if w.served_at is None:
            return False
        with w.scrape_lock:
            try:
                while w.stale_replies and w.scrapes.poll():  # late answers to timed-out asks
                    w.scrapes.recv_bytes()
                    w.stale_replies -= 1
                w.scrapes.send("scrape")
                if not w.scrapes.poll(SCRAPE_TIMEOUT_S):
                    w.stale_replies += 1
                    log.warning("worker.scrape_timed_out", worker=w.index)
                    return False
                text = w.scrapes.recv_bytes().decode()
            except (EOFError, OSError):
                return False
        families = parse(text)
        with self._lock:
            w.last = families
        return True


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def worker_families(
    count: int, up: dict[int, bool], restarts: dict[int, int], rpcs: dict[int, float]
) -> list[Metric]:
    """The supervisor's series about its workers (also rendered by the dashboard test)."""
    workers = GaugeMetricFamily("banditd_workers", "Worker processes configured (server.workers)",
                                value=count)  # fmt: skip
    alive = GaugeMetricFamily(
        "banditd_worker_up", "1 while the worker serves and answered this scrape",
        labels=["worker"],
    )  # fmt: skip
    restarted = CounterMetricFamily(
        "banditd_worker_restarts", "Workers restarted after they died unexpectedly",
        labels=["worker"],
    )  # fmt: skip
    answered = CounterMetricFamily(
        "banditd_worker_rpcs",
        "RPCs each worker answered (all its lives): how SO_REUSEPORT spread the connections",
        labels=["worker"],
    )  # fmt: skip
    for i in range(count):
        alive.add_metric([str(i)], 1 if up.get(i) else 0)
        restarted.add_metric([str(i)], restarts.get(i, 0))
        answered.add_metric([str(i)], rpcs.get(i, 0.0))
    return [workers, alive, restarted, answered]


def check_free(name: str, address: str) -> None:
    """A ConfigError if something listens on `address` (host:port) already."""
    if not address or address.startswith("unix:"):
        return
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except (OSError, ValueError):
        return  # the workers' own bind reports it
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"cannot listen on {address}: address already in use (server.{name})"
                ) from None


def _mib(value: int | None) -> int | None:
    return None if value is None else round(value / (1 << 20))


def _describe(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
