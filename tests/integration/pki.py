"""Throwaway certificate authorities for TLS tests, made with the openssl command line."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    def pair(self) -> tuple[bytes, bytes]:
        return self.key.read_bytes(), self.cert.read_bytes()


class CA:
    """A CA in `directory` that issues certificates with the SANs a test asks for."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl not installed")
        self._openssl = openssl
        self.dir = directory
        self.name = name
        directory.mkdir(parents=True, exist_ok=True)
        self._run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.crt",
            "-days",
            "1",
            "-subj",
            f"/CN=banditd-test-{name}",
        )
        self.cert = directory / f"{name}.crt"

    def _run(self, *args: str) -> None:
        subprocess.run([self._openssl, *args], cwd=self.dir, check=True, capture_output=True,
                       timeout=60)  # fmt: skip

    def issue(self, name: str, cn: str, sans: str = "IP:127.0.0.1") -> Issued:
        """A certificate and key for `cn` with subjectAltName `sans` (e.g. URI:spiffe://...)."""
        (self.dir / f"{name}.ext").write_text(f"subjectAltName={sans}\n")
        self._run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                  f"{name}.csr", "-subj", f"/CN={cn}")  # fmt: skip
        self._run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{self.name}.crt", "-CAkey",
                  f"{self.name}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
                  "-extfile", f"{name}.ext")  # fmt: skip
        return Issued(self.dir / f"{name}.crt", self.dir / f"{name}.key")
