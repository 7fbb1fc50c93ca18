"""Smoke test of the workers section (bench/workers.py): two echo processes share a port, the
load generator spreads its calls over several connections, and the summary's arithmetic.
Tiny runs; speed is never asserted."""

from __future__ import annotations

import pytest

from bench import workers
from bench.launcher import run_client


def test_two_echo_processes_share_a_port_and_take_a_multi_connection_load() -> None:
    echoes, address = workers.start_echoes(2, arms=2)
    try:
        assert all(p.proc.poll() is None for p in echoes)  # both bound the one port
        run = run_client(["conc", "--target", address, "--dim", "4", "--arms", "2",
                          "--inflight", "8", "--connections", "4", "--seconds", "0.3",
                          "--warmup-seconds", "0.1"], timeout_s=60, cpu=None)  # fmt: skip
    finally:
        for p in echoes:
            p.stop()
    assert run["connections"] == 4
    assert int(run["round_trips"]) > 0  # type: ignore[call-overload]
    assert set(run["route"]) == {"p50_us", "p99_us"}  # type: ignore[arg-type]


def _run(rate: float, server_us: float) -> dict[str, object]:
    return {
        "round_trips_per_s": rate, "route": {"p50_us": 1.0, "p99_us": 2.0},
        "pair": {"p50_us": 3.0, "p99_us": 4.0}, "server_cpu_us": server_us,
        "redis_cpu_us": 100.0, "client_cpu_us": 500.0, "client_cpu_share": 0.5,
        "server_cpus": 1.0, "redis_cpus": 0.1, "all_cpu_us": server_us + 600.0,
        "ceiling": 2 * rate,
    }  # fmt: skip


def test_summary_ratios_are_medians_and_paired_per_repeat() -> None:
    runs = {
        workers.ONE: [_run(100, 1000), _run(110, 1000), _run(90, 1000)],
        workers.TWO: [_run(150, 1100), _run(220, 1100), _run(180, 1100)],
        workers.ECHO_ONE: [_run(1000, 500)] * 3,
        workers.ECHO_TWO: [_run(1500, 500)] * 3,
    }
    summary = workers.summarise(runs)
    ratios = summary["ratios"]
    assert ratios["banditd 2 workers / 1 worker"] == pytest.approx(180 / 100)  # type: ignore[index]
    assert summary["paired"]["banditd 2 workers / 1 worker"] == pytest.approx([1.5, 2.0, 2.0])  # type: ignore[index]
    assert ratios["echo aio 2 processes / 1 process"] == pytest.approx(1.5)  # type: ignore[index]
    assert ratios["banditd 2 workers / echo aio 2 processes"] == pytest.approx(0.12)  # type: ignore[index]
    assert ratios["CPU-normalised: 1-worker CPU/rt over 2-worker CPU/rt"] == pytest.approx(  # type: ignore[index]
        1000 / 1100
    )
    assert [r["reached"] for r in summary["cpu_rows"]] == ["50%"] * 4  # type: ignore[attr-defined]
