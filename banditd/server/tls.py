"""TLS for the gRPC listeners: server credentials that follow their files (cert-manager rotation).

grpcio's dynamic SSL credentials ask a fetcher for a new certificate configuration at every TLS
handshake; `CertificateFiles.fetch` answers from the files, re-reading them only when their
modification times changed, and at most every `reload_check_s`. A file that is half-written or
unreadable keeps the last good certificate (logged: `tls.reload_failed`), so a rotation never
breaks the listener. Connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

from banditd.errors import ConfigError

log = structlog.get_logger("banditd.tls")


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Paths of a server certificate chain, its key, and (for mTLS) the client CA bundle."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""
    require_client_cert: bool = False
    reload_check_s: float = 5.0

    def paths(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in (self.cert_file, self.key_file, self.client_ca_file) if p)


class CertificateFiles:
    """The current certificate configuration of one set of files (thread-safe: grpc calls
    `fetch` from its own threads)."""

    def __init__(self, files: TLSFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamps = self._mtimes()
        self._current = self._read()  # at start, unreadable files are a configuration error

    def _mtimes(self) -> tuple[int, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in self._files.paths())

    def _read(self) -> grpc.ServerCertificateConfiguration:
        files = self._files
        try:
            cert, key = Path(files.cert_file).read_bytes(), Path(files.key_file).read_bytes()
            ca = Path(files.client_ca_file).read_bytes() if files.client_ca_file else None
        except OSError as exc:
            raise ConfigError(f"server.tls: cannot read {exc.filename}: {exc.strerror}") from None
        if (
            b"-----BEGIN" not in cert
            or b"-----BEGIN" not in key
            or (ca is not None and b"-----BEGIN" not in ca)
        ):
            raise ConfigError(
                "server.tls: cert_file, key_file and client_ca_file must be PEM files"
            )  # fmt: skip
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._current

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration if the files changed since the last look, else None (keep)."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self._files.reload_check_s:
                return None
            self._checked = now
            try:
                stamps = self._mtimes()
                if stamps == self._stamps:
                    return None
                config = self._read()
            except (OSError, ConfigError) as exc:
                log.warning("tls.reload_failed", error=str(exc)[:300])
                return None
            self._stamps, self._current = stamps, config
        log.info("tls.reloaded", cert_file=self._files.cert_file)
        return config


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port` that pick up rotated files without a restart."""
    certificates = CertificateFiles(files)
    credentials = grpc.dynamic_ssl_server_credentials(
        certificates.initial(),
        certificates.fetch,  # type: ignore[arg-type]  # (the stub omits "None: no change")
        require_client_authentication=files.require_client_cert,
    )
    return credentials
