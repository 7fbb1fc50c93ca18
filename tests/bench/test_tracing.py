"""Smoke test of the tracing section (bench/tracing.py): a traced daemon exports its spans over
OTLP to the collector stand-in. Tiny runs; speed is never asserted."""

from __future__ import annotations

from pathlib import Path

from bench import tracing
from bench.launcher import run_client
from bench.otlp_sink import spans_received

DIM, ARMS, CALLS = 4, 2, 5


def test_traced_daemon_exports_two_spans_per_round_trip(tmp_path: Path) -> None:
    """Route and Feedback each reach the stand-in as a span once the daemon stops (flush)."""
    sink, address = tracing.start_sink()
    with sink:
        extra = tracing.tracing_toml(f"http://{address}", 1.0)
        daemon, target = tracing.start_daemon(tmp_path, tracing.ON, DIM, ARMS, extra)
        with daemon:
            shape = ["--dim", str(DIM), "--arms", str(ARMS)]
            run = run_client(["seq", "--target", target, *shape, "--calls", str(CALLS),
                              "--warmup", "0"], timeout_s=60)  # fmt: skip
        assert run["round_trips"] == CALLS
        assert spans_received(sink.output()) >= 2 * CALLS  # (+ the readiness probe's Route)


def test_spans_received_reads_the_last_total() -> None:
    assert spans_received("spans 3\nnoise\nspans 10\n") == 10
    assert spans_received("") == 0
