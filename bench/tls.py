"""The TLS rows of the gRPC section (bench/grpc.py): certificates, how each TLS server and its
client are set up, and the table of TLS / plaintext ratios.

Once per run, `issue` makes a throwaway CA, a server certificate for IP 127.0.0.1 and a client
certificate (URI SAN spiffe://banditd-bench/client) with the openssl command line in the run's
temp dir, as tests/integration/pki.py does for the tests (RSA 2048 keys, valid for a day).

- **banditd TLS**: the "banditd" row's config plus `[server.tls]` (cert_file, key_file);
- **banditd mTLS**: also `client_ca_file` and `require_client_cert`, and one caller named by
  the client certificate's identity (roles route and feedback on the bench policy), so each
  call is also identified and authorised, as in a deployment that uses mTLS for callers;
- **echo aio TLS**: bench/echo_server.py's aio flavour with `--tls-cert/--tls-key`.

Clients trust the CA (`loadgen --tls-ca`; for mTLS also `--tls-cert/--tls-key`). A client run
opens one channel, so one handshake per run (counted in its server CPU, spread over the run's
round trips); what each call pays is the record encryption (and for mTLS, the caller check).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.loadgen import credentials
from bench.table import show

CLIENT_ID = "spiffe://banditd-bench/client"
KEYS = "RSA 2048"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_flags(self, mutual: bool) -> list[str]:
        """bench/loadgen.py's flags for a channel to a server with these certificates."""
        flags = ["--tls-ca", str(self.ca)]
        if mutual:
            flags += ["--tls-cert", str(self.client_cert), "--tls-key", str(self.client_key)]
        return flags

    def channel(self, mutual: bool) -> grpc.ChannelCredentials:
        """The same channel credentials, for the readiness probe."""
        cert, key = (str(self.client_cert), str(self.client_key)) if mutual else ("", "")
        secure = credentials(str(self.ca), cert, key)
        assert secure is not None
        return secure

    def echo_flags(self, mutual: bool) -> list[str]:
        """bench/echo_server.py's flags."""
        flags = ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key)]
        return [*flags, "--tls-client-ca", str(self.ca)] if mutual else flags

    def daemon_toml(self, mutual: bool, policy: str) -> str:
        """Config tables appended to the daemon's bench config."""
        text = f'\n[server.tls]\ncert_file = "{self.server_cert}"\nkey_file = "{self.server_key}"\n'
        if mutual:
            text += f'client_ca_file = "{self.ca}"\nrequire_client_cert = true\n'
            text += (
                f'\n[[auth.callers]]\nname = "bench"\nidentities = ["{CLIENT_ID}"]\n'
                f'roles = ["route", "feedback"]\npolicies = ["{policy}"]\n'
            )
        return text


def issue(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, in `directory`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)  # fmt: skip

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=banditd-bench-ca")  # fmt: skip
    for name, cn, san in (
        ("server", "127.0.0.1", "IP:127.0.0.1"),
        ("client", "bench-client", f"URI:{CLIENT_ID}"),
    ):
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={cn}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
            "-extfile", f"{name}.ext")  # fmt: skip
    return Certificates(
        directory / "ca.crt",
        directory / "server.crt",
        directory / "server.key",
        directory / "client.crt",
        directory / "client.key",
    )


@dataclass(frozen=True)
class Variant:
    name: str  # its row in the tables
    base: str  # the plaintext row it is compared with
    mutual: bool  # mTLS


VARIANTS = (
    Variant("banditd TLS", "banditd", mutual=False),
    Variant("banditd mTLS", "banditd", mutual=True),
    Variant("echo aio TLS", "echo aio", mutual=False),
)
COMPARED = (  # (row, over row): TLS rows over their plaintext row; mTLS over TLS too
    *((v.name, v.base) for v in VARIANTS),
    ("banditd mTLS", "banditd TLS"),
)

Runs = Mapping[str, Mapping[str, Sequence[Mapping[str, object]]]]


def _values(runs: Runs, name: str, mode: str, key: str) -> list[float]:
    return [float(run[key]) for run in runs[name][mode]]  # type: ignore[arg-type]


def ratios(runs: Runs, pairs: Sequence[tuple[str, str]] = COMPARED) -> list[dict[str, object]]:
    """Per compared pair (row, over row): ratios of medians (round trips/s, server CPU per
    round trip), the rates' ratio paired within each repeat (median, min, max), and the extra
    CPU µs per rt. (bench/tracing.py compares its rows with the same arithmetic.)"""
    rows: list[dict[str, object]] = []
    for name, base in pairs:
        if name not in runs or base not in runs:
            continue
        row: dict[str, object] = {"pair": f"{name} / {base}"}
        for mode in ("seq", "conc"):
            ours = _values(runs, name, mode, "round_trips_per_s")
            theirs = _values(runs, base, mode, "round_trips_per_s")
            paired = [a / b for a, b in zip(ours, theirs, strict=True)]
            cpu = _values(runs, name, mode, "server_cpu_us")
            cpu_base = _values(runs, base, mode, "server_cpu_us")
            row[mode] = {
                "rate": statistics.median(ours) / statistics.median(theirs),
                "paired_median": statistics.median(paired),
                "paired_min": min(paired),
                "paired_max": max(paired),
                "cpu": statistics.median(cpu) / statistics.median(cpu_base),
                "cpu_extra_us": statistics.median(cpu) - statistics.median(cpu_base),
            }
        rows.append(row)
    return rows


def show_ratios(rows: Sequence[Mapping[str, object]], inflight: int, title: str = "") -> None:
    def pct(value: object) -> str:
        return f"{100 * float(value):.0f}%"  # type: ignore[arg-type]

    def paired(mode: Mapping[str, object]) -> str:
        low, high = pct(mode["paired_min"]), pct(mode["paired_max"])
        return f"{pct(mode['paired_median'])} ({low}..{high})"

    table = []
    for row in rows:
        seq, conc = row["seq"], row["conc"]
        assert isinstance(seq, dict)
        assert isinstance(conc, dict)
        table.append({
            "": row["pair"],
            "seq rt/s": pct(seq["rate"]),
            "seq paired": paired(seq),
            f"{inflight} in flight rt/s": pct(conc["rate"]),
            f"{inflight} in flight paired": paired(conc),
            "seq CPU/rt": pct(seq["cpu"]),
            "loaded CPU/rt": pct(conc["cpu"]),
            "loaded CPU +µs/rt": float(conc["cpu_extra_us"]),
        })  # fmt: skip
    show(
        table,
        title
        or "TLS vs plaintext, same run (ratios of medians; paired: median (min..max) of the ratio"
        f" within each repeat; CPU: the server's per round trip; one {KEYS} handshake per client"
        " run)",
    )
