"""What OpenTelemetry tracing costs the daemon: Route+Feedback round trips with [tracing] off
and on, in the same interleaved repeats as the gRPC section (bench/grpc.py).

    python -m bench.tracing [--quick] [--shape DxK]

Rows (each a `banditd serve` process pinned to CPU0, the bench config of bench/grpc.py):
- **tracing off**: the default; nothing of OpenTelemetry is imported.
- **tracing on, ratio 1**: `[tracing] enabled = true, sample_ratio = 1.0`: every Route and
  Feedback is a recorded span (2 spans per round trip; the in-memory store makes no store
  spans), batched and exported over OTLP/gRPC to bench/otlp_sink.py, a collector stand-in on
  CPU1 that counts them. The load generator sends no traceparent, so each RPC starts its trace.
- **tracing on, ratio 0**: the same with `sample_ratio = 0.0`: the wrappers run, the spans are
  sampled out (no recording, no export): the floor of having tracing on.

Tables: round trips/s and server CPU µs per round trip (medians), then on / off ratios (paired
within each repeat too, as the TLS rows are) and the spans the stand-in received.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import grpc as grpc_bench
from bench import tls
from bench.launcher import (
    CLIENT_CPU,
    SERVER_CPU,
    Process,
    free_port,
    grpc_ready,
    pinned,
    pinning_available,
)
from bench.otlp_sink import spans_received
from bench.table import show

OFF, ON, SAMPLED_OUT = "tracing off", "tracing on, ratio 1", "tracing on, ratio 0"
PAIRS = ((ON, OFF), (SAMPLED_OUT, OFF))


def tracing_toml(endpoint: str, ratio: float) -> str:
    return f'\n[tracing]\nenabled = true\nendpoint = "{endpoint}"\nsample_ratio = {ratio}\n'


def start_daemon(workdir: Path, name: str, dim: int, arms: int, extra: str) -> tuple[Process, str]:
    port = free_port()
    config = workdir / f"{name.replace(' ', '-').replace(',', '')}.toml"
    config.write_text(grpc_bench.daemon_config(port, dim, arms, "linucb", "memory", "", extra))
    argv = [sys.executable, "-m", "banditd", "serve", "--config", str(config)]
    process = Process(name.replace(" ", "-").replace(",", ""), pinned(SERVER_CPU, argv))
    address = f"127.0.0.1:{port}"
    probe = grpc_bench._probe(dim, arms)
    process.wait_until(lambda: grpc_ready(address, probe), timeout_s=60)  # type: ignore[arg-type]
    return process, address


def start_sink() -> tuple[Process, str]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)]
    process = Process("otlp-sink", pinned(CLIENT_CPU, argv))
    address = f"127.0.0.1:{port}"
    process.wait_until(lambda: grpc_ready(address), timeout_s=30)
    return process, address


def main(quick: bool = False, shape: tuple[int, int] = (32, 16)) -> dict[str, object]:
    plan = grpc_bench.QUICK if quick else grpc_bench.FULL
    dim, arms = shape
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        print("== tracing: SKIPPED, the otel extra is not installed (pip install '.[otel]') ==\n")
        return {"skipped": "the otel extra is not installed"}
    pinning = "servers CPU0, clients and the OTLP stand-in CPU1" if pinning_available() else "none"
    print(
        f"== tracing cost: Route+Feedback round trips, d={dim}, K={arms}, in-memory store;"
        f" {plan.repeats} run(s) per row, seq {plan.calls} round trips, {plan.inflight} in"
        f" flight for {plan.seconds:g} s; pinning: {pinning} ==",
        flush=True,
    )
    processes: list[Process] = []
    targets: dict[str, str] = {}
    pids: dict[str, int] = {}
    result: dict[str, object] = {"plan": plan.__dict__, "dim": dim, "arms": arms}
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        workdir = Path(tmp)
        try:
            sink, sink_address = start_sink()
            processes.append(sink)
            endpoint = f"http://{sink_address}"
            for name, extra in (
                (OFF, ""), (ON, tracing_toml(endpoint, 1.0)),
                (SAMPLED_OUT, tracing_toml(endpoint, 0.0)),
            ):  # fmt: skip
                process, address = start_daemon(workdir, name, dim, arms, extra)
                processes.append(process)
                targets[name], pids[name] = address, process.proc.pid
            runs = grpc_bench.measure(targets, pids, plan, dim, arms, unbatched=targets)
            for process in reversed(processes[1:]):  # the daemons flush their spans on stop
                process.stop()
            received = spans_received(sink.output())
        finally:
            for process in reversed(processes):
                process.stop()
    summary = grpc_bench.summarise(runs, plan)
    ratios = tls.ratios(runs, PAIRS)
    counted = sum(int(r["round_trips_total"]) for mode in ("seq", "conc") for r in runs[ON][mode])  # type: ignore[call-overload]
    result.update({"seq_rows": summary["seq_rows"], "conc_rows": summary["conc_rows"],
                   "ratios": ratios, "runs": runs, "spans_received": received,
                   "traced_round_trips_counted": counted})  # fmt: skip
    show(summary["seq_rows"], "sequential: one round trip (Route then Feedback) at a time")  # type: ignore[arg-type]
    show(summary["conc_rows"], f"under load: {plan.inflight} round trips in flight")  # type: ignore[arg-type]
    tls.show_ratios(
        ratios, plan.inflight,
        "tracing on / off, same run (ratios of medians; paired: median (min..max) of the ratio"
        " within each repeat; CPU: the server's per round trip)",
    )  # fmt: skip
    print(
        f"  spans received by the OTLP stand-in: {received:,} for {counted:,} round trips"
        f" counted with ratio 1 (2 spans each; warm-up round trips are traced but not counted)\n",
        flush=True,
    )
    return result


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shape", type=grpc_bench._shape, default=(32, 16), help="DxK")
    args = parser.parse_args(argv)
    main(args.quick, args.shape)


if __name__ == "__main__":
    cli()
