"""The daemon on the Redis store next to the memory store, under load, in one run.

    python -m bench.redis [--quick] [--redis-cpu 0|1|none] [--shape 32x16]

Three `banditd serve` processes pinned to CPU0, measured in the same interleaved repeats by the
same load generator (bench/loadgen.py, pinned to CPU1: `seq`, one Route then Feedback at a
time, and `conc`, 64 in flight): the memory store, and the Redis store with
store.redis.coalesce = false (one pooled redis-py call per script: the state before
coalescing) and = true. Per server and mode: round trips/s (medians), Route p50/p99, the
daemon's CPU per round trip; for the Redis rows also what Redis saw per Route+Feedback, from
its INFO before and after each run: round trips (read events on client sockets), script calls,
and its own CPU (user + system). The ratios are the Redis rows' round trips/s over the memory
store's (target under load: at least 70% with coalescing).

redis-server runs on CPU1 by default, beside the load generator: in a deployment it runs on
another machine, and on CPU0 it would take its CPU per Route+Feedback from the daemon's core
(`--redis-cpu 0` measures that placement). Then a bare redis-py table (sync client, CPU1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import redis as redis_sync

from bench import grpc as grpc_section
from bench.launcher import (
    CLIENT_CPU,
    SERVER_CPU,
    Process,
    cpu_seconds,
    free_port,
    grpc_ready,
    pinned,
    pinning_available,
    run_client,
    start_redis,
)
from bench.table import show

MEMORY, POOLED, COALESCED = "memory store", "Redis, coalesce off", "Redis, coalesce on"
SERVERS = {  # name -> (store, [store.redis] options)
    MEMORY: ("memory", ""),
    POOLED: ("redis", "coalesce = false"),
    COALESCED: ("redis", "coalesce = true"),
}
TARGET = 0.70


def start(workdir: Path, name: str, dim: int, arms: int, url: str) -> tuple[Process, str]:
    store, options = SERVERS[name]
    port = free_port()
    slug = name.replace(" ", "-").replace(",", "")
    config = workdir / f"{slug}.toml"
    config.write_text(grpc_section.daemon_config(
        port, dim, arms, "linucb", store, url, redis_options=options,
        prefix=f"bench-{slug}-{dim}x{arms}",
    ))  # fmt: skip
    argv = [sys.executable, "-m", "banditd", "serve", "--config", str(config)]
    process = Process(slug, pinned(SERVER_CPU, argv))
    address = f"127.0.0.1:{port}"
    probe = grpc_section._probe(dim, arms)
    process.wait_until(lambda: grpc_ready(address, probe), timeout_s=60)  # type: ignore[arg-type]
    return process, address


def redis_counters(client: redis_sync.Redis) -> tuple[int, int, float]:
    """Read events on client sockets, script calls, CPU seconds (user + system)."""
    stats = client.info("stats")
    commands = client.info("commandstats")
    cpu = client.info("cpu")
    scripts = sum(
        int(commands.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )
    user, system = float(cpu["used_cpu_user"]), float(cpu["used_cpu_sys"])
    return int(stats["total_reads_processed"]), scripts, user + system


def measure(
    targets: dict[str, str],
    pids: dict[str, int],
    client: redis_sync.Redis,
    plan: grpc_section.Plan,
    dim: int,
    arms: int,
) -> dict[str, dict[str, list[dict[str, object]]]]:
    """Interleaved runs, order rotated per repeat: each server a sequential run, then a loaded
    one; each run with its CPU and Redis counts per round trip (over every round trip the
    run completed, warm-up included)."""
    runs: dict[str, dict[str, list[dict[str, object]]]] = {
        name: {"seq": [], "conc": []} for name in targets
    }
    names = list(targets)
    for repeat in range(plan.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            shape = ["--target", targets[name], "--dim", str(dim), "--arms", str(arms)]
            for mode, args in (
                ("seq", ["seq", *shape, "--calls", str(plan.calls)]),
                ("conc", ["conc", *shape, "--inflight", str(plan.inflight), "--seconds",
                          str(plan.seconds), "--warmup-seconds", str(plan.warmup_seconds)]),
            ):  # fmt: skip
                before, cpu = redis_counters(client), cpu_seconds(pids[name])
                run = run_client(args)
                used, after = cpu_seconds(pids[name]) - cpu, redis_counters(client)
                total = float(run["round_trips_total"])  # type: ignore[arg-type]
                run["server_cpu_us"] = 1e6 * used / total
                run["redis_round_trips"] = (after[0] - before[0] - 3) / total  # less 3 INFOs
                run["redis_scripts"] = (after[1] - before[1]) / total
                run["redis_cpu_us"] = 1e6 * (after[2] - before[2]) / total
                runs[name][mode].append(run)
    return runs


def _median(runs: Sequence[dict[str, object]], *path: str) -> float:
    values = []
    for run in runs:
        value: object = run
        for key in path:
            value = value[key]  # type: ignore[index]
        values.append(float(value))  # type: ignore[arg-type]
    return statistics.median(values)


Runs = dict[str, dict[str, list[dict[str, object]]]]  # server -> mode -> runs


def _rows(runs: Runs, mode: str) -> list[dict[str, object]]:
    rows = []
    for name, by_mode in runs.items():
        each = by_mode[mode]
        rates = [float(r["round_trips_per_s"]) for r in each]  # type: ignore[arg-type]
        redis = SERVERS[name][0] == "redis"
        rows.append({
            "server": name,
            "round trips/s": statistics.median(rates),
            "min..max": f"{min(rates):,.0f}..{max(rates):,.0f}",
            "Route p50 µs": _median(each, "route", "p50_us"),
            "Route p99 µs": _median(each, "route", "p99_us"),
            "daemon CPU µs/rt": _median(each, "server_cpu_us"),
            "Redis rt/rt": _median(each, "redis_round_trips") if redis else None,
            "scripts/rt": _median(each, "redis_scripts") if redis else None,
            "Redis CPU µs/rt": _median(each, "redis_cpu_us") if redis else None,
        })  # fmt: skip
    return rows


def summarise(runs: Runs) -> dict[str, object]:
    rows, seq_rows = _rows(runs, "conc"), _rows(runs, "seq")
    ratios: dict[str, float] = {}
    for mode, table in (("loaded", rows), ("sequential", seq_rows)):
        by = {str(r["server"]): float(r["round trips/s"]) for r in table}  # type: ignore[arg-type]
        for name in (POOLED, COALESCED):
            ratios[f"{mode}: {name} / {MEMORY}"] = by[name] / by[MEMORY]
        ratios[f"{mode}: {COALESCED} / {POOLED}"] = by[COALESCED] / by[POOLED]
    paired = {}  # within each repeat: a slow drift of the machine cancels out
    for name in (POOLED, COALESCED):
        ours = [float(r["round_trips_per_s"]) for r in runs[name]["conc"]]  # type: ignore[arg-type]
        base = [float(r["round_trips_per_s"]) for r in runs[MEMORY]["conc"]]  # type: ignore[arg-type]
        paired[f"loaded: {name} / {MEMORY}"] = [a / b for a, b in zip(ours, base, strict=True)]
    return {"rows": rows, "seq_rows": seq_rows, "ratios": ratios, "paired": paired, "runs": runs}


def main(
    quick: bool = False,
    redis_url: str = "",
    shape: tuple[int, int] = (32, 16),
    redis_cpu: int | None = CLIENT_CPU,
) -> dict[str, object]:
    plan = grpc_section.QUICK if quick else grpc_section.FULL
    dim, arms = shape
    where = "not pinned" if redis_cpu is None else f"CPU{redis_cpu}"
    pinning = "daemons CPU0, load generator CPU1" if pinning_available() else "none"
    print(
        f"== Redis store vs memory store under load: d={dim}, K={arms}, {plan.inflight} Route+"
        f"Feedback in flight for {plan.seconds:g} s after {plan.warmup_seconds:g} s warm-up,"
        f" {plan.repeats} interleaved run(s) per server; pinning: {pinning}, redis-server"
        f" {where if not redis_url else 'at ' + redis_url} ==",
        flush=True,
    )
    result: dict[str, object] = {"plan": plan.__dict__, "dim": dim, "arms": arms,
                                 "redis_cpu": where}  # fmt: skip
    processes: list[Process] = []
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        workdir = Path(tmp)
        url = redis_url
        try:
            if not url:
                redis_process, url = start_redis(workdir, cpu=redis_cpu)
                processes.append(redis_process)
            client = redis_sync.Redis.from_url(url)
            targets, pids = {}, {}
            for name in SERVERS:
                process, address = start(workdir, name, dim, arms, url)
                processes.append(process)
                targets[name], pids[name] = address, process.proc.pid
            summary = measure(targets, pids, client, plan, dim, arms)
            result.update(summarise(summary))
            result["redis"] = run_client(["redis", "--url", url, "--calls",
                                          str(200 if quick else 2000)])  # fmt: skip
            client.close()
        finally:
            for process in reversed(processes):
                process.stop()
    show(result["seq_rows"], "sequential: one Route+Feedback at a time (medians; rt ="  # type: ignore[arg-type]
         " Route+Feedback; Redis columns from its INFO, per rt)")  # fmt: skip
    show(result["rows"], f"under load: {plan.inflight} Route+Feedback in flight (medians)")  # type: ignore[arg-type]
    for label, ratio in result["ratios"].items():  # type: ignore[attr-defined]
        target = f" (target ≥ {TARGET:.0%})" if label == f"loaded: {COALESCED} / {MEMORY}" else ""
        print(f"  {label}: {100 * ratio:.0f}%{target}")
    for label, each in result["paired"].items():  # type: ignore[attr-defined]
        print(
            f"  paired per repeat, {label}: median {100 * statistics.median(each):.0f}%,"
            f" {100 * min(each):.0f}%..{100 * max(each):.0f}% over {len(each)} repeats"
        )
    rows = [{"redis-py call": k, **v} for k, v in result["redis"].items()]  # type: ignore[attr-defined]
    show(rows, "bare redis-py round trips (sync client, CPU1)")
    return result


def _cpu(text: str) -> int | None:
    return None if text == "none" else int(text)


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis-url", default="", help="default: start a redis-server")
    parser.add_argument("--shape", type=grpc_section._shape, default=(32, 16), help="DxK")
    parser.add_argument("--redis-cpu", type=_cpu, default=CLIENT_CPU, help="0, 1 or none")
    args = parser.parse_args(argv)
    main(args.quick, args.redis_url, args.shape, args.redis_cpu)


if __name__ == "__main__":
    cli()
