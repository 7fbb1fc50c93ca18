"""The daemon's Route+Feedback round trips through gRPC on loopback, next to bare grpcio echoes.

    python -m bench.grpc [--quick] [--store memory|redis] [--redis-url URL] [--profile] [--no-tls]

Servers (each its own process, pinned to CPU0): the daemon (`python -m banditd serve`, temp
config, one LinUCB policy with d−1 numeric features + bias and K arms, metrics endpoint off, log
level warning) and bench/echo_server.py in its grpc.aio and sync-ThreadPool flavours (the
ceiling: same service, same request and response shapes, trivial handlers). Clients
(bench/loadgen.py) run as separate processes pinned to CPU1. With the in-memory store, "banditd on
sync server" (bench/sync_daemon.py) also runs the daemon's handlers on grpcio's sync server, to
see whether the faster bare server makes the daemon faster. Runs are interleaved across servers
and repeated; tables show medians over runs. One round trip = Route + Feedback.
TLS rows (bench/tls.py: the daemon with TLS and with mTLS, the aio echo with TLS; certificates
made once per run with openssl) run in the same interleaved repeats, sequential and loaded (not
batched), and a table compares each with its plaintext row.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc as grpclib

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from bench import profile as profiler
from bench import tls
from bench.launcher import (
    ROOT,
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


@dataclass(frozen=True)
class Plan:
    repeats: int
    calls: int  # sequential round trips per run
    seconds: float  # concurrent measured window per run
    warmup_seconds: float
    inflight: int
    batch: int  # rewards per FeedbackBatch in the batched loaded run


FULL = Plan(repeats=5, calls=800, seconds=2.0, warmup_seconds=0.5, inflight=64, batch=32)
QUICK = Plan(repeats=1, calls=100, seconds=0.5, warmup_seconds=0.2, inflight=32, batch=16)


def daemon_config(
    port: int,
    dim: int,
    arms: int,
    algorithm: str,
    store: str,
    url: str,
    extra: str = "",
    redis_options: str = "",
    prefix: str = "",
) -> str:
    """The bench's daemon config; `extra` is appended (TOML tables: server.tls, auth);
    `redis_options` go into [store.redis] (e.g. "coalesce = false"); `prefix` is the Redis
    key prefix (default: one per request shape)."""
    features = ", ".join(f'"f{j}"' for j in range(dim - 1))
    ids = ", ".join(f'"a{i}"' for i in range(arms))
    # One key prefix per request shape: a model trained under one shape's features is (rightly)
    # refused under another's, so shapes must not share state in one Redis.
    prefix = prefix or f"bench-{dim}x{arms}"
    redis = (
        f'\n[store.redis]\nurl = "{url}"\nkey_prefix = "{prefix}"\n{redis_options}\n'
        if store == "redis"
        else ""
    )
    return f"""# written by bench/grpc.py
log_level = "warning"
seed = 1

[server]
listen = "127.0.0.1:{port}"
metrics_listen = ""
admin_listen = ""
grace_s = 1

[store]
backend = "{store}"
{redis}
[policies.bench]
algorithm = "{algorithm}"
alpha = 0.5
arms = [{ids}]
reward_wait_s = 3600
features.numeric = [{features}]
{extra}"""


def _probe(dim: int, arms: int) -> object:
    request = pb.RouteRequest(
        policy="bench",
        context=pb.Context(features={f"f{j}": 0.0 for j in range(dim - 1)}),
        candidates=[pb.Candidate(id=f"a{i}") for i in range(arms)],
    )

    def call(channel: grpclib.Channel) -> None:
        stub = pb_grpc.RouterStub(channel)  # type: ignore[no-untyped-call]
        stub.Route(request, timeout=2)

    return call


SYNC_EXPERIMENT = "banditd on sync server"  # bench/sync_daemon.py: not a ceiling, not banditd


def start_daemon(
    workdir: Path,
    dim: int,
    arms: int,
    algorithm: str,
    store: str,
    url: str,
    sync: bool = False,
    variant: tls.Variant | None = None,
    certificates: tls.Certificates | None = None,
    cwd: Path = ROOT,
) -> tuple[Process, str]:
    """The daemon (or the sync experiment) on a free port; with a TLS variant, its TLS tables.
    `cwd`: the tree whose `banditd` it runs (bench/mypyc.py: a compiled copy)."""
    port = free_port()
    name = "banditd-sync" if sync else "banditd"
    extra, secure = "", None
    if variant is not None and certificates is not None:
        name = variant.name.replace(" ", "-")
        extra = certificates.daemon_toml(variant.mutual, "bench")
        secure = certificates.channel(variant.mutual)
    config = workdir / f"{name}-{dim}x{arms}.toml"
    config.write_text(daemon_config(port, dim, arms, algorithm, store, url, extra))
    argv = [sys.executable, "-m", "bench.sync_daemon" if sync else "banditd"]
    argv += ["--config", str(config)] if sync else ["serve", "--config", str(config)]
    process = Process(name, pinned(SERVER_CPU, argv), cwd)
    address = f"127.0.0.1:{port}"
    probe = _probe(dim, arms)
    process.wait_until(lambda: grpc_ready(address, probe, secure), timeout_s=60)  # type: ignore[arg-type]
    return process, address


ECHOES = {  # server name -> echo_server flags; bare echoes are the ceiling
    "echo aio": ["--flavour", "aio"],
    "echo sync": ["--flavour", "sync"],
}
CEILINGS = ("echo aio", "echo sync")


def start_echo(
    name: str,
    arms: int,
    variant: tls.Variant | None = None,
    certificates: tls.Certificates | None = None,
) -> tuple[Process, str]:
    """An echo server (`name` in ECHOES) on a free port; with a TLS variant, listening with TLS."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.echo_server", *ECHOES[name], "--port", str(port),
            "--arms", str(arms)]  # fmt: skip
    secure = None
    if variant is not None and certificates is not None:
        name = variant.name
        argv += certificates.echo_flags(variant.mutual)
        secure = certificates.channel(variant.mutual)
    process = Process(name.replace(" ", "-"), pinned(SERVER_CPU, argv))
    address = f"127.0.0.1:{port}"
    process.wait_until(lambda: grpc_ready(address, None, secure), timeout_s=30)
    return process, address


def _median(runs: Sequence[dict[str, object]], *path: str) -> float:
    values = []
    for run in runs:
        value: object = run
        for key in path:
            value = value[key]  # type: ignore[index]
        values.append(float(value))  # type: ignore[arg-type]
    return statistics.median(values)


def measure(
    targets: dict[str, str],
    pids: dict[str, int],
    plan: Plan,
    dim: int,
    arms: int,
    client_flags: Mapping[str, Sequence[str]] | None = None,
    unbatched: Collection[str] = (),
) -> dict[str, dict[str, list[dict[str, object]]]]:
    """Interleaved runs: each repeat visits every server (order rotated), seq then conc, then
    batch except for the servers in `unbatched`. `client_flags` adds loadgen flags per server
    (the TLS rows' --tls-ca, ...).

    Each run also records the server's CPU time per round trip (its /proc CPU time across the
    client's whole run, warm-up included, over the round trips completed): unlike round trips
    per second, that hardly moves when other processes compete for the server's CPU.
    """
    runs: dict[str, dict[str, list[dict[str, object]]]] = {
        name: {"seq": [], "conc": [], "batch": []} for name in targets
    }
    names = list(targets)
    shape = ["--dim", str(dim), "--arms", str(arms)]
    for repeat in range(plan.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            target = ["--target", targets[name], *shape, *(client_flags or {}).get(name, ())]
            loaded = [
                "conc", *target, "--inflight", str(plan.inflight),
                "--seconds", str(plan.seconds), "--warmup-seconds", str(plan.warmup_seconds),
            ]  # fmt: skip
            for mode, args in (
                ("seq", ["seq", *target, "--calls", str(plan.calls)]),
                ("conc", loaded),
                ("batch", [*loaded, "--batch", str(plan.batch)]),
            ):
                if mode == "batch" and name in unbatched:
                    continue
                before = cpu_seconds(pids[name])
                run = run_client(args)
                used = cpu_seconds(pids[name]) - before
                run["server_cpu_us"] = 1e6 * used / float(run["round_trips_total"])  # type: ignore[arg-type]
                runs[name][mode].append(run)
    return runs


LOADED_RPS, LOADED_CPU = "round trips/s", "server CPU µs/rt"


def summarise(runs: dict[str, dict[str, list[dict[str, object]]]], plan: Plan) -> dict[str, object]:
    """Medians over runs: one table for sequential calls, one for calls under load."""
    seq_rows, conc_rows, batch_rows = [], [], []
    for name, by_mode in runs.items():
        seq, conc, batch = by_mode["seq"], by_mode["conc"], by_mode["batch"]
        if batch:  # (the TLS rows run no batched mode)
            batch_rows.append({
                "server": name,
                LOADED_RPS: _median(batch, "round_trips_per_s"),
                "Route p50 µs": _median(batch, "pair", "p50_us"),
                "Route p99 µs": _median(batch, "pair", "p99_us"),
                LOADED_CPU: _median(batch, "server_cpu_us"),
                # rewards answered with an error code (not counted as round trips), all runs
                "failed rewards": sum(int(run.get("failed_items", 0)) for run in batch),  # type: ignore[call-overload]
            })  # fmt: skip
        seq_rows.append({
            "server": name,
            "round trips/s": _median(seq, "round_trips_per_s"),
            "p50 µs": _median(seq, "pair", "p50_us"),
            "p99 µs": _median(seq, "pair", "p99_us"),
            "Route p50 µs": _median(seq, "route", "p50_us"),
            "Route p99 µs": _median(seq, "route", "p99_us"),
            "Feedback p50 µs": _median(seq, "feedback", "p50_us"),
            "server CPU µs/rt": _median(seq, "server_cpu_us"),
        })  # fmt: skip
        rates = [float(r["round_trips_per_s"]) for r in conc]  # type: ignore[arg-type]
        conc_rows.append({
            "server": name,
            LOADED_RPS: _median(conc, "round_trips_per_s"),
            "min..max": f"{min(rates):,.0f}..{max(rates):,.0f}",
            "p50 µs": _median(conc, "pair", "p50_us"),
            "p99 µs": _median(conc, "pair", "p99_us"),
            LOADED_CPU: _median(conc, "server_cpu_us"),
        })  # fmt: skip
    ratios: dict[str, float] = {}
    seq_by = {str(r["server"]): r for r in seq_rows}
    conc_by = {str(r["server"]): r for r in conc_rows}
    echoes = [n for n in conc_by if n in CEILINGS]
    if "banditd" in conc_by and echoes:

        def value(row: dict[str, object], key: str) -> float:
            return float(row[key])  # type: ignore[arg-type]

        for mode, by, key in (
            (f"{plan.inflight} in flight", conc_by, LOADED_RPS),
            ("sequential", seq_by, "round trips/s"),
        ):
            for echo in echoes:
                ratios[f"{mode}: banditd / {echo}"] = value(by["banditd"], key) / value(
                    by[echo], key
                )
            best = max(value(by[e], key) for e in echoes)
            ratios[f"{mode}: banditd / best echo"] = value(by["banditd"], key) / best
            if SYNC_EXPERIMENT in by:
                ratios[f"{mode}: {SYNC_EXPERIMENT} / banditd"] = value(
                    by[SYNC_EXPERIMENT], key
                ) / value(by["banditd"], key)
        for echo in echoes:  # CPU per round trip is the inverse of CPU-bound throughput
            ratios[f"{plan.inflight} in flight, CPU-normalised: {echo} CPU / banditd CPU"] = value(
                conc_by[echo], LOADED_CPU
            ) / value(conc_by["banditd"], LOADED_CPU)
    paired = paired_ratios(runs, echoes, plan) if "banditd" in runs else {}
    batch_by = {str(r["server"]): r for r in batch_rows}
    if "banditd" in batch_by:
        for echo in echoes:
            ratios[f"rewards in batches of {plan.batch}: banditd / {echo}"] = float(
                batch_by["banditd"][LOADED_RPS]  # type: ignore[arg-type]
            ) / float(batch_by[echo][LOADED_RPS])  # type: ignore[arg-type]
        ratios[f"rewards in batches of {plan.batch}: banditd / banditd unary Feedback"] = float(
            batch_by["banditd"][LOADED_RPS]  # type: ignore[arg-type]
        ) / float(conc_by["banditd"][LOADED_RPS])  # type: ignore[arg-type]
    return {
        "seq_rows": seq_rows, "conc_rows": conc_rows, "batch_rows": batch_rows,
        "ratios": ratios, "paired": paired, "runs": runs,
    }  # fmt: skip


def paired_ratios(
    runs: dict[str, dict[str, list[dict[str, object]]]], echoes: Sequence[str], plan: Plan
) -> dict[str, list[float]]:
    """banditd / echo within each repeat (the servers of one repeat run minutes apart at most),
    so a slow drift of the machine cancels out; the spread shows what is left of the noise."""
    out: dict[str, list[float]] = {}
    for mode, label in (("conc", f"{plan.inflight} in flight"), ("seq", "sequential")):
        ours = [float(r["round_trips_per_s"]) for r in runs["banditd"][mode]]  # type: ignore[arg-type]
        for echo in echoes:
            theirs = [float(r["round_trips_per_s"]) for r in runs[echo][mode]]  # type: ignore[arg-type]
            out[f"{label}: banditd / {echo}"] = [a / b for a, b in zip(ours, theirs, strict=True)]
    return out


EVICT_MB = 4.0  # swept between the cold handler's round trips: about this VM's L2 + L3 share


def print_decomposition(
    rows: Sequence[dict[str, object]], handler: dict[str, object], cold: dict[str, object]
) -> None:
    """Server CPU per round trip under load: daemon ≈ echo (gRPC's share) + handler (ours)."""
    cpu = {str(r["server"]): float(r[LOADED_CPU]) for r in rows}  # type: ignore[arg-type]
    ours = float(handler["pair_cpu_us"])  # type: ignore[arg-type]
    chilled = float(cold["pair_cpu_us"])  # type: ignore[arg-type]
    print(
        f"  handler alone (RouterService.Route+Feedback in-process, no gRPC, CPU0):"
        f" {ours:,.0f} µs CPU per round trip in a hot loop ({float(handler['pair_us']):,.0f} µs"  # type: ignore[arg-type]
        f" wall; median of {handler['chunks']} chunks of {handler['calls_per_chunk']});"
        f" {chilled:,.0f} µs CPU with cold caches ({float(cold['pair_us']):,.0f} µs wall;"  # type: ignore[arg-type]
        f" {cold['evict_mb']:g} MB of other memory swept before each of {cold['calls']} round"
        " trips, each timed alone)"
    )
    if "banditd" in cpu and "echo aio" in cpu:
        rest = cpu["banditd"] - cpu["echo aio"] - chilled
        print(
            f"  server CPU µs per round trip under load: banditd {cpu['banditd']:,.0f}"
            f" ≈ echo aio {cpu['echo aio']:,.0f} (gRPC) + cold handler {chilled:,.0f}"
            f" + rest {rest:,.0f}"
        )


def run_shape(
    workdir: Path,
    plan: Plan,
    shape: tuple[int, int],
    algorithm: str,
    store: str,
    url: str,
    profile: bool,
    certificates: tls.Certificates | None = None,
) -> dict[str, object]:
    """Start the servers for one request shape (with `certificates`, the TLS rows too),
    measure, stop them; print the tables."""
    dim, arms = shape
    print(
        f"-- request shape d={dim}, K={arms} ({dim - 1} named features + bias, {arms} candidates;"
        f" Route answers {arms} ArmScores), {algorithm}, store={store} --",
        flush=True,
    )
    result: dict[str, object] = {"dim": dim, "arms": arms, "store": store, "algorithm": algorithm}
    processes: list[Process] = []
    targets: dict[str, str] = {}
    pids: dict[str, int] = {}
    try:
        try:
            daemon, address = start_daemon(workdir, dim, arms, algorithm, store, url)
            processes.append(daemon)
            targets["banditd"] = address
            pids["banditd"] = daemon.proc.pid
        except RuntimeError as exc:
            message = f"the daemon did not start with store={store}: {exc}"
            print(f"  SKIPPED banditd: {message}", flush=True)
            result["daemon_error"] = message
        if "banditd" in targets and store == "memory":
            process, address = start_daemon(workdir, dim, arms, algorithm, store, url, sync=True)
            processes.append(process)
            targets[SYNC_EXPERIMENT] = address
            pids[SYNC_EXPERIMENT] = process.proc.pid
        for name in ECHOES:
            process, address = start_echo(name, arms)
            processes.append(process)
            targets[name] = address
            pids[name] = process.proc.pid
        client_flags: dict[str, list[str]] = {}
        for variant in tls.VARIANTS if certificates is not None else ():
            if variant.base not in targets:
                continue
            try:
                if variant.base == "banditd":
                    process, address = start_daemon(
                        workdir, dim, arms, algorithm, store, url,
                        variant=variant, certificates=certificates,
                    )  # fmt: skip
                else:
                    process, address = start_echo(variant.base, arms, variant, certificates)
            except RuntimeError as exc:
                print(f"  SKIPPED {variant.name}: {exc}", flush=True)
                result.setdefault("tls_errors", {})[variant.name] = str(exc)  # type: ignore[index]
                continue
            processes.append(process)
            targets[variant.name] = address
            pids[variant.name] = process.proc.pid
            client_flags[variant.name] = certificates.client_flags(variant.mutual)  # type: ignore[union-attr]
        runs = measure(targets, pids, plan, dim, arms, client_flags, unbatched=client_flags)
        summary = summarise(runs, plan)
        result.update(summary)
        result["tls_ratios"] = tls.ratios(runs)
        if "banditd" in targets:
            config = workdir / "handler.toml"
            config.write_text(daemon_config(0, dim, arms, algorithm, store, url))
            argv = ["handler", "--config", str(config), "--dim", str(dim), "--arms", str(arms),
                    "--calls", str(100 if plan is QUICK else 500),
                    "--chunks", str(1 if plan is QUICK else 7)]  # fmt: skip
            result["handler"] = run_client(argv, cpu=SERVER_CPU)
            cold = [*argv, "--evict-mb", str(EVICT_MB)]
            result["handler_cold"] = run_client(cold, cpu=SERVER_CPU)
            if profile:
                result["profile"] = profile_daemon(daemon, targets["banditd"], plan, shape)
    finally:
        for process in reversed(processes):
            process.stop()
    show(summary["seq_rows"], "sequential: one round trip (Route then Feedback) at a time")  # type: ignore[arg-type]
    show(
        summary["conc_rows"],  # type: ignore[arg-type]
        f"under load: {plan.inflight} round trips in flight (grpc.aio client, one channel)",
    )
    show(
        summary["batch_rows"],  # type: ignore[arg-type]
        f"under load, rewards batched: {plan.inflight} Routes in flight, rewards sent in"
        f" FeedbackBatch calls of {plan.batch} (a round trip counts when its reward is applied;"
        " rewards answered with an error code are counted apart)",
    )
    for label, ratio in summary["ratios"].items():  # type: ignore[attr-defined]
        unjudged = SYNC_EXPERIMENT in label or "batches" in label
        target = "" if unjudged else " (target ≥ 50% of the echo ceiling)"
        print(f"  {label}: {100 * ratio:.0f}%{target}")
    for label, each in summary["paired"].items():  # type: ignore[attr-defined]
        print(
            f"  paired per repeat, {label}: median {100 * statistics.median(each):.0f}%,"
            f" {100 * min(each):.0f}%..{100 * max(each):.0f}% over {len(each)} repeats"
        )
    if "handler" in result:
        print_decomposition(summary["conc_rows"], result["handler"], result["handler_cold"])  # type: ignore[arg-type]
    print(flush=True)
    if result["tls_ratios"]:
        tls.show_ratios(result["tls_ratios"], plan.inflight)  # type: ignore[arg-type]
    if "profile" in result:
        profiler.show(result["profile"], skip=_LOOP_FRAMES)  # type: ignore[arg-type]
    return result


_LOOP_FRAMES = (  # on (nearly) every stack: left out of the inclusive list
    "runpy", "runners.py", "cli.py", "(__main__.py)", "run_forever", "run_until", "_run_once",
    "Thread._bootstrap",
)  # fmt: skip


def profile_daemon(
    daemon: Process, address: str, plan: Plan, shape: tuple[int, int]
) -> dict[str, object]:
    """py-spy samples the daemon during one extra concurrent run (not part of the medians)."""
    if profiler.available() is None:
        return {"error": "py-spy is not installed (pip install py-spy; in the bench extra)"}
    out = ROOT / "out" / f"daemon-d{shape[0]}-k{shape[1]}.pyspy.txt"
    out.parent.mkdir(exist_ok=True)
    seconds = plan.seconds + 1
    spy = profiler.record(daemon.proc.pid, seconds, out)
    run_client([
        "conc", "--target", address, "--dim", str(shape[0]), "--arms", str(shape[1]),
        "--inflight", str(plan.inflight), "--seconds", str(seconds), "--warmup-seconds", "0",
    ])  # fmt: skip
    spy.wait(timeout=60)
    if not out.exists():
        return {"error": f"py-spy wrote nothing (exit {spy.returncode}; ptrace not allowed?)"}
    return {"file": str(out), **profiler.summarise(out)}


def main(
    quick: bool = False,
    store: str = "memory",
    redis_url: str = "",
    shapes: Sequence[tuple[int, int]] | None = None,
    algorithm: str = "linucb",
    profile: bool = False,
    secure: bool = True,
) -> dict[str, object]:
    plan = QUICK if quick else FULL
    shapes = shapes or ([(32, 16)] if quick else [(32, 16), (8, 4)])
    pinning = "servers CPU0, clients CPU1" if pinning_available() else "none (no taskset/2 CPUs)"
    print(
        f"== gRPC round trips (Route + Feedback): {plan.repeats} run(s) per server, seq"
        f" {plan.calls} round trips, {plan.inflight} in flight for {plan.seconds:g} s after"
        f" {plan.warmup_seconds:g} s warm-up; pinning: {pinning} ==",
        flush=True,
    )
    result: dict[str, object] = {"plan": plan.__dict__, "store": store, "shapes": []}
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
        workdir = Path(tmp)
        redis_process = None
        url = redis_url
        certificates = None
        if secure:
            try:
                certificates = tls.issue(workdir / "pki")
                result["tls"] = {"keys": tls.KEYS, "client_identity": tls.CLIENT_ID}
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"  TLS rows SKIPPED: no certificates ({exc})", flush=True)
                result["tls"] = {"skipped": str(exc)}
        try:
            if store == "redis" and not url:
                redis_process, url = start_redis(workdir)
            for shape in shapes:
                result["shapes"].append(  # type: ignore[attr-defined]
                    run_shape(workdir, plan, shape, algorithm, store, url, profile, certificates)
                )
            if url:
                result["redis"] = run_client(
                    ["redis", "--url", url, "--calls", str(200 if quick else 2000)]
                )
        finally:
            if redis_process is not None:
                redis_process.stop()
    if "redis" in result:
        rows = [{"redis-py call": k, **v} for k, v in result["redis"].items()]  # type: ignore[attr-defined]
        show(rows, f"bare redis-py round trips (sync client, CPU1) to {url}")
    return result


def _shape(text: str) -> tuple[int, int]:
    dim, _, arms = text.partition("x")
    return int(dim), int(arms)


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    parser.add_argument("--redis-url", default="", help="default with --store redis: start one")
    parser.add_argument(
        "--shape", type=_shape, action="append", help="DxK, repeatable (default 32x16 and 8x4)"
    )
    parser.add_argument("--algorithm", choices=("linucb", "thompson"), default="linucb")
    parser.add_argument("--profile", action="store_true", help="py-spy the daemon")
    parser.add_argument("--no-tls", action="store_true", help="leave out the TLS rows")
    args = parser.parse_args(argv)
    main(
        args.quick,
        args.store,
        args.redis_url,
        args.shape,
        args.algorithm,
        args.profile,
        not args.no_tls,
    )


if __name__ == "__main__":
    cli()
