"""A throwaway certificate authority for tests, made with the `openssl` command line.

What cert-manager's CA issuer would put in the Secret: ca.crt (the CA), tls.crt and tls.key (a
leaf with the Certificate's DNS and URI SANs, usable as server and as client certificate).
ECDSA P-256 keys, one day of validity.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.conftest import tool


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [tool("openssl"), *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    )


def make_ca(directory: Path, name: str = "banditd test CA") -> KeyPair:
    """A self-signed CA: `<directory>/ca.crt`, `<directory>/ca.key`."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    return KeyPair(directory / "ca.crt", directory / "ca.key")


def issue(
    ca: KeyPair,
    directory: Path,
    *,
    common_name: str = "banditd",
    dns_names: Sequence[str] = (),
    uris: Sequence[str] = (),
) -> KeyPair:
    """A leaf signed by `ca` for server and client auth: `<directory>/tls.crt`, `tls.key`."""
    directory.mkdir(parents=True, exist_ok=True)
    sans = [f"DNS:{d}" for d in dns_names] + [f"URI:{u}" for u in uris]
    extensions = [
        "basicConstraints = critical, CA:FALSE",
        "keyUsage = critical, digitalSignature",
        "extendedKeyUsage = serverAuth, clientAuth",
    ]
    if sans:
        extensions.append("subjectAltName = " + ", ".join(sans))
    (directory / "leaf.ext").write_text("\n".join(extensions) + "\n", encoding="utf-8")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={common_name}", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "tls.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", f"0x{secrets.token_hex(16)}", "-days", "1", "-extfile", "leaf.ext",
        "-out", "tls.crt", cwd=directory,
    )  # fmt: skip
    for scratch in ("leaf.ext", "tls.csr"):  # leave what a cert-manager Secret holds
        (directory / scratch).unlink()
    return KeyPair(directory / "tls.crt", directory / "tls.key")
