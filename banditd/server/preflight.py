"""What `serve` checks before it listens, free of side effects so `check-config` runs it too.

`check_files` reads every file the config names (TLS certificates, keys and CA bundles of the
listeners and of Redis, the tokens file) as serve and redis-py will use them, and makes sure
the trace and spill paths can be written, writing nothing. `check_listen` finds out why an
address cannot be bound before grpc tries (grpc says only "Failed to bind", and on stderr).
Both raise ConfigError (ListenError) naming the setting.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

from banditd.config import Settings
from banditd.errors import ConfigError, ListenError
from banditd.server.auth import Authorizer
from banditd.server.tls import CertificateFiles, TLSFiles


def check_files(settings: Settings) -> None:
    """ConfigError if a file the config names cannot serve its purpose (nothing is written)."""
    t = settings.server.tls
    if t.enabled:
        names = {
            "cert_file": t.cert_file,
            "key_file": t.key_file,
            "client_ca_file": t.client_ca_file,
        }
        _check_tls("server.tls", names, server=True)
        # what each listener's credentials read at start
        CertificateFiles(TLSFiles(t.cert_file, t.key_file, t.client_ca_file))
    r = settings.store.redis
    if settings.store.backend == "redis" and r.url.startswith("rediss://"):
        names = {"tls_cert_file": r.tls_cert_file, "tls_key_file": r.tls_key_file,
                 "tls_ca_file": r.tls_ca_file}  # fmt: skip
        _check_tls("store.redis", names, server=False)
    Authorizer.from_config(settings.callers(), settings.auth.tokens_file)
    if settings.trace_path:  # appended to (created 0600, its directories made as needed)
        _check_writable(Path(settings.trace_path), "trace_path")
    if settings.store.backend == "redis" and r.spill_path:  # read at start, written at stop
        _check_writable(Path(r.spill_path), "store.redis.spill_path")


def _check_tls(section: str, files: dict[str, str], server: bool) -> None:
    """`files` (setting name -> path: certificate chain, its key, CA bundle) load as the TLS
    library loads them: readable, PEM, the key unencrypted and belonging to the certificate."""
    for name, path in files.items():
        if path:
            try:
                Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"{section}.{name} {path}: {_reason(exc)}") from None
    (cert_name, cert), (key_name, key), (ca_name, ca) = files.items()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    if cert:
        try:  # password b"": an encrypted key fails here instead of prompting on a terminal
            context.load_cert_chain(cert, key or None, password=b"")
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{section}: {cert_name} {cert} and {key_name} {key} are not a PEM certificate"
                f" chain and its unencrypted private key ({exc.reason or exc})"
            ) from None
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{section}.{ca_name} {ca} is not a PEM CA bundle ({exc.reason or exc})"
            ) from None


def _check_writable(path: Path, setting: str) -> None:
    """`path` can be read and appended to, or created with the directories it lacks."""
    if path.is_dir():
        raise ConfigError(f"{setting} {path} is a directory, not a file")
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"{setting} {path} is not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"{setting} {path}: permission denied (need read and write)")
        return
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    if not directory.is_dir():
        raise ConfigError(f"{setting} {path}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting} {path}: cannot create files in {directory}")


def check_listen(address: str, setting: str, reuse_port: bool = False) -> None:
    """ListenError if `address` cannot be bound now: a socket like grpc's (SO_REUSEADDR, and
    SO_REUSEPORT as a worker process sets it to share the port with its siblings) is bound to
    it and closed at once. A name that resolves to several addresses is fine if one of them
    binds, as it is for grpc."""
    if address.startswith("unix:"):
        directory = Path(address[len("unix:") :]).parent
        if not directory.is_dir():
            raise ListenError(f"cannot listen on {address}: no directory {directory} ({setting})")
        return
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, ValueError) as exc:
        raise ListenError(f"cannot listen on {address}: {_reason(exc)} ({setting})") from None
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                s.bind(sockaddr)
            except OSError as exc:
                error = error or exc
            else:
                return
    if error is not None:
        raise ListenError(f"cannot listen on {address}: {_reason(error)} ({setting})")


def listen_error(address: str, setting: str, exc: BaseException | None = None) -> ListenError:
    """The ListenError for a bind that failed although check_listen passed (a race, or a
    reason it cannot see)."""
    reason = f": {_reason(exc)}" if isinstance(exc, OSError) else ""
    return ListenError(f"cannot listen on {address}{reason} ({setting})")


def _reason(exc: BaseException) -> str:
    """'address already in use' from OSError(EADDRINUSE, 'Address already in use')."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text[:1].lower() + text[1:]
