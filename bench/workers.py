"""Worker processes (server.workers): Route+Feedback round trips under load on the Redis store,
1 worker against 2, next to the bare grpcio echo run the same way (1 process, and 2 processes
on one port with SO_REUSEPORT) as the ceiling.

    python -m bench.workers [--quick] [--shape DxK]

Rows, all serving d=32, K=16 requests (bench/grpc.py's config, `store.backend = "redis"`):
- **banditd 1 worker**, **banditd 2 workers**: `banditd serve --server.workers 1|2`, each on
  a Redis database of its own in one redis-server;
- **echo aio 1 process**, **echo aio 2 processes**: bench/echo_server.py (grpc.aio, canned
  answers), the second as two processes on one port (`--reuseport`).

Nothing is pinned: two workers need both CPUs, so the servers, redis-server and the load
generator share the machine's CPUs as the scheduler sees fit, in every row alike. The load
generator (bench/loadgen.py `conc`, a separate process) keeps 64 round trips in flight over 16
TCP connections (one connection reaches one process: the kernel picks it per connection), 2 s
measured after 0.5 s of warm-up, interleaved over the rows, 5 repeats. Each run records the
CPU the servers (the whole process tree), redis-server and the load generator used: on a
machine with few CPUs the load generator's share is CPU the servers cannot have, so the table
shows it next to the rates, and a CPU-normalised ratio (server CPU per round trip, 1 worker
over 2) says how the work itself scales.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench import grpc as grpc_bench
from bench.launcher import (
    Process,
    cpu_seconds,
    free_port,
    grpc_ready,
    run_client,
    start_redis,
    tree_cpu_seconds,
)
from bench.table import show

ONE, TWO = "banditd 1 worker", "banditd 2 workers"
ECHO_ONE, ECHO_TWO = "echo aio 1 process", "echo aio 2 processes"
ROWS = (ONE, TWO, ECHO_ONE, ECHO_TWO)
PROCESSES = {ONE: 1, TWO: 2, ECHO_ONE: 1, ECHO_TWO: 2}  # server processes: 1 CPU each at most
CONNECTIONS = 16
RATE, CPU = "round trips/s", "server CPU µs/rt"
ALL, CEILING = "all CPU µs/rt", "CPU ceiling rt/s"


def start_daemon(
    workdir: Path, workers: int, url: str, dim: int, arms: int
) -> tuple[Process, str, str]:
    """`banditd serve` with `workers` workers (unpinned); (process, address, metrics url)."""
    port, metrics = free_port(), free_port()
    config = workdir / f"workers-{workers}.toml"
    config.write_text(grpc_bench.daemon_config(port, dim, arms, "linucb", "redis", url))
    argv = [sys.executable, "-m", "banditd", "serve", "--config", str(config), "--server.workers",
            str(workers), "--server.metrics_listen", f"127.0.0.1:{metrics}"]  # fmt: skip
    process = Process(f"banditd-{workers}w", argv)
    address, metrics_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics}/metrics"
    probe = grpc_bench._probe(dim, arms)

    def ready() -> bool:
        if not grpc_ready(address, probe):  # type: ignore[arg-type]
            return False
        if workers == 1:
            return True
        up = _samples(metrics_url, "banditd_worker_up")
        return len(up) == workers and all(v == 1 for v in up.values())

    process.wait_until(ready, timeout_s=90)
    return process, address, metrics_url


def start_echoes(processes: int, arms: int) -> tuple[list[Process], str]:
    """`processes` aio echo servers sharing one port."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.echo_server", "--flavour", "aio", "--port", str(port),
            "--arms", str(arms), "--reuseport"]  # fmt: skip
    started = [Process(f"echo-aio-{processes}p-{i}", argv) for i in range(processes)]
    address = f"127.0.0.1:{port}"
    for p in started:
        p.wait_until(lambda p=p: "serving" in p.output(), timeout_s=30)  # type: ignore[misc]
    started[0].wait_until(lambda: grpc_ready(address), timeout_s=30)
    return started, address


def _samples(url: str, name: str) -> dict[str, float]:
    """worker label -> value of the series `name` on the supervisor's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        s.labels.get("worker", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def measure(
    targets: dict[str, str], pids: dict[str, list[int]], redis_pid: int, plan: grpc_bench.Plan,
    dim: int, arms: int,
) -> dict[str, list[dict[str, object]]]:  # fmt: skip
    """Interleaved loaded runs (order rotated per repeat); CPU of servers, Redis and client."""
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in targets}
    names = list(targets)
    cpus = len(os.sched_getaffinity(0))
    for repeat in range(plan.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            args = ["conc", "--target", targets[name], "--dim", str(dim), "--arms", str(arms),
                    "--inflight", str(plan.inflight), "--connections", str(CONNECTIONS),
                    "--seconds", str(plan.seconds),
                    "--warmup-seconds", str(plan.warmup_seconds)]  # fmt: skip
            server0 = sum(tree_cpu_seconds(p) for p in pids[name])
            redis0 = cpu_seconds(redis_pid)
            run = run_client(args, cpu=None)
            server = sum(tree_cpu_seconds(p) for p in pids[name]) - server0
            redis = cpu_seconds(redis_pid) - redis0
            total = float(run["round_trips_total"])  # type: ignore[arg-type]
            rate = float(run["round_trips_per_s"])  # type: ignore[arg-type]
            client_us = 1e6 * float(run["client_cpu_share"]) / rate  # type: ignore[arg-type]
            every = 1e6 * (server + redis) / total + client_us
            run.update({
                "server_cpu_us": 1e6 * server / total,
                "redis_cpu_us": 1e6 * redis / total,
                "client_cpu_us": client_us,
                # CPUs in use while measured: the rate times the CPU per round trip
                "server_cpus": rate * server / total, "redis_cpus": rate * redis / total,
                # What this machine's CPUs allow at these CPU costs per round trip: all of
                # them for server + Redis + client, and no more than 1 CPU per server process.
                "all_cpu_us": every,
                "ceiling": min(cpus * 1e6 / every, PROCESSES[name] * total / server),
            })  # fmt: skip
            runs[name].append(run)
    return runs


def _median(runs: Sequence[dict[str, object]], *path: str) -> float:
    values = []
    for run in runs:
        value: object = run
        for key in path:
            value = value[key]  # type: ignore[index]
        values.append(float(value))  # type: ignore[arg-type]
    return statistics.median(values)


def summarise(runs: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    rows, cpu_rows = [], []
    for name, each in runs.items():
        rates = [float(r["round_trips_per_s"]) for r in each]  # type: ignore[arg-type]
        rows.append({
            "server": name,
            RATE: _median(each, "round_trips_per_s"),
            "min..max": f"{min(rates):,.0f}..{max(rates):,.0f}",
            "Route p50 µs": _median(each, "route", "p50_us"),
            "Route p99 µs": _median(each, "route", "p99_us"),
            "round trip p50 µs": _median(each, "pair", "p50_us"),
            CPU: _median(each, "server_cpu_us"),
        })  # fmt: skip
        reached = [
            float(r["round_trips_per_s"]) / float(r["ceiling"])  # type: ignore[arg-type]
            for r in each
        ]
        cpu_rows.append({
            "server": name,
            CPU: _median(each, "server_cpu_us"),
            "Redis µs/rt": _median(each, "redis_cpu_us"),
            "client µs/rt": _median(each, "client_cpu_us"),
            ALL: _median(each, "all_cpu_us"),
            "server CPUs": _median(each, "server_cpus"),
            "Redis CPUs": _median(each, "redis_cpus"),
            "client CPUs": _median(each, "client_cpu_share"),
            CEILING: _median(each, "ceiling"),
            "reached": f"{100 * statistics.median(reached):.0f}%",
        })  # fmt: skip
    by = {str(r["server"]): r for r in rows}

    def ratio(a: str, b: str, key: str = RATE) -> float:
        return float(by[a][key]) / float(by[b][key])  # type: ignore[arg-type]

    def paired(a: str, b: str) -> list[float]:
        return [
            float(x["round_trips_per_s"]) / float(y["round_trips_per_s"])  # type: ignore[arg-type]
            for x, y in zip(runs[a], runs[b], strict=True)
        ]

    ratios: dict[str, float] = {}
    spreads: dict[str, list[float]] = {}
    if ONE in by and TWO in by:
        ratios["banditd 2 workers / 1 worker"] = ratio(TWO, ONE)
        spreads["banditd 2 workers / 1 worker"] = paired(TWO, ONE)
        # CPU per round trip, 1 over 2: how the work scales if the CPUs were there
        ratios["CPU-normalised: 1-worker CPU/rt over 2-worker CPU/rt"] = ratio(ONE, TWO, CPU)
    if ECHO_ONE in by and ECHO_TWO in by:
        ratios["echo aio 2 processes / 1 process"] = ratio(ECHO_TWO, ECHO_ONE)
        spreads["echo aio 2 processes / 1 process"] = paired(ECHO_TWO, ECHO_ONE)
    for ours, echo in ((TWO, ECHO_TWO), (ONE, ECHO_ONE)):
        if ours in by and echo in by:
            ratios[f"{ours} / {echo}"] = ratio(ours, echo)
            spreads[f"{ours} / {echo}"] = paired(ours, echo)
    return {"rows": rows, "cpu_rows": cpu_rows, "ratios": ratios, "paired": spreads}


def main(quick: bool = False, shape: tuple[int, int] = (32, 16)) -> dict[str, object]:
    plan = grpc_bench.QUICK if quick else grpc_bench.FULL
    dim, arms = shape
    cpus = len(os.sched_getaffinity(0))
    print(
        f"== worker processes: Route+Feedback on the Redis store, d={dim}, K={arms};"
        f" {plan.inflight} in flight over {CONNECTIONS} connections, {plan.seconds:g} s after"
        f" {plan.warmup_seconds:g} s warm-up, {plan.repeats} interleaved run(s) per row;"
        f" nothing pinned ({cpus} CPUs shared by servers, redis-server and load generator) ==",
        flush=True,
    )
    result: dict[str, object] = {"plan": plan.__dict__, "dim": dim, "arms": arms, "cpus": cpus}
    processes: list[Process] = []
    targets: dict[str, str] = {}
    pids: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        workdir = Path(tmp)
        try:
            redis, url = start_redis(workdir, cpu=None)
            processes.append(redis)
            for workers, name in ((1, ONE), (2, TWO)):
                db_url = url.rsplit("/", 1)[0] + f"/{workers}"
                daemon, targets[name], metrics_url = start_daemon(
                    workdir, workers, db_url, dim, arms
                )
                processes.append(daemon)
                pids[name] = [daemon.proc.pid]
                result[f"{name} metrics"] = metrics_url
            for count, name in ((1, ECHO_ONE), (2, ECHO_TWO)):
                echoes, targets[name] = start_echoes(count, arms)
                processes.extend(echoes)
                pids[name] = [p.proc.pid for p in echoes]
            runs = measure(targets, pids, redis.proc.pid, plan, dim, arms)
            split = _samples(str(result[f"{TWO} metrics"]), "banditd_worker_rpcs_total")
            result["worker_rpcs"] = split
        finally:
            for process in reversed(processes):
                process.stop()
    summary = summarise(runs)
    result.update(summary)
    result["runs"] = runs
    title = (
        f"under load: {plan.inflight} round trips (Route + Feedback) in flight over"
        f" {CONNECTIONS} connections, Redis store; medians over runs"
    )
    show(summary["rows"], title)  # type: ignore[arg-type]
    show(
        summary["cpu_rows"],  # type: ignore[arg-type]
        "where the CPU went: µs per round trip of the server processes, redis-server and the"
        " load generator, the CPUs each used while measured, and the rate those costs allow on"
        f" this machine's {result['cpus']} CPUs (all of them for the three; at most 1 per server"
        " process)",
    )
    for label, value in summary["ratios"].items():  # type: ignore[attr-defined]
        target = " (target >= 1.6x)" if label == "banditd 2 workers / 1 worker" else ""
        print(f"  {label}: {value:.2f}x{target}")
    for label, each in summary["paired"].items():  # type: ignore[attr-defined]
        print(f"  paired per repeat, {label}: median {statistics.median(each):.2f}x,"
              f" {min(each):.2f}x..{max(each):.2f}x over {len(each)} repeats")  # fmt: skip
    print(f"  RPCs each of the 2 workers answered over the whole run: {split}\n", flush=True)
    return result


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shape", type=grpc_bench._shape, default=(32, 16), help="DxK")
    args = parser.parse_args(argv)
    main(args.quick, args.shape)


if __name__ == "__main__":
    cli()
