"""Smoke test of the gRPC section's TLS rows (bench/tls.py): certificates, TLS servers, the load
generator's secure channels, the ratio table. Tiny runs; speed is never asserted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import grpc as grpc_bench
from bench import tls
from bench.launcher import run_client

if shutil.which("openssl") is None:
    pytest.skip("openssl not installed", allow_module_level=True)

TINY = grpc_bench.Plan(repeats=1, calls=5, seconds=0.2, warmup_seconds=0.1, inflight=4, batch=2)
DIM, ARMS = 4, 2


def _variant(name: str) -> tls.Variant:
    return next(v for v in tls.VARIANTS if v.name == name)


def test_tls_rows_answer_secure_clients_and_refuse_others(tmp_path: Path) -> None:
    """The mTLS daemon (a caller named by its certificate) and the TLS aio echo complete round
    trips over the load generator's secure channels, with no batched mode; a plaintext client
    gets nothing from the TLS echo, a client without a certificate nothing from the daemon."""
    certificates = tls.issue(tmp_path / "pki")
    mtls, echo_tls = _variant("banditd mTLS"), _variant("echo aio TLS")
    daemon, daemon_address = grpc_bench.start_daemon(
        tmp_path, DIM, ARMS, "linucb", "memory", "", variant=mtls, certificates=certificates
    )
    with daemon:
        echo, echo_address = grpc_bench.start_echo("echo aio", ARMS, echo_tls, certificates)
        with echo:
            targets = {mtls.name: daemon_address, echo_tls.name: echo_address}
            pids = {mtls.name: daemon.proc.pid, echo_tls.name: echo.proc.pid}
            flags = {v.name: certificates.client_flags(v.mutual) for v in (mtls, echo_tls)}
            runs = grpc_bench.measure(targets, pids, TINY, DIM, ARMS, flags, unbatched=flags)
            shape = ["--dim", str(DIM), "--arms", str(ARMS), "--calls", "1", "--warmup", "0"]
            with pytest.raises(RuntimeError, match="UNAVAILABLE"):
                run_client(["seq", "--target", echo_address, *shape], timeout_s=60)
            no_certificate = certificates.client_flags(mutual=False)
            with pytest.raises(RuntimeError, match="UNAVAILABLE"):
                run_client(["seq", "--target", daemon_address, *shape, *no_certificate], 60)
    for name in targets:
        assert runs[name]["seq"][0]["round_trips"] == TINY.calls
        assert int(runs[name]["conc"][0]["round_trips_total"]) > 0  # type: ignore[call-overload]
        assert runs[name]["batch"] == []


def _run(rate: float, cpu_us: float) -> dict[str, object]:
    return {"round_trips_per_s": rate, "server_cpu_us": cpu_us}


def test_ratios_compare_each_tls_row_with_its_plaintext_row() -> None:
    """Ratios of medians, paired per repeat, and the extra CPU per round trip; pairs whose rows
    did not run are left out."""
    runs = {
        "banditd": {"seq": [_run(100, 500), _run(200, 500)], "conc": [_run(100, 400)] * 2},
        "banditd TLS": {"seq": [_run(90, 550), _run(150, 550)], "conc": [_run(80, 500)] * 2},
    }
    (row,) = tls.ratios(runs)
    assert row["pair"] == "banditd TLS / banditd"
    seq, conc = row["seq"], row["conc"]
    assert isinstance(seq, dict)
    assert isinstance(conc, dict)
    assert seq["rate"] == pytest.approx(120 / 150)
    assert (seq["paired_min"], seq["paired_max"]) == (pytest.approx(0.75), pytest.approx(0.9))
    assert conc["rate"] == pytest.approx(0.8)
    assert conc["cpu"] == pytest.approx(1.25)
    assert conc["cpu_extra_us"] == pytest.approx(100)
