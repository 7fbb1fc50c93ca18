"""How a client reaches banditd: the channel (plaintext, TLS, mTLS), the metadata every call
carries (a bearer token, pairs the caller chooses) and gRPC's own retries (the service config).

Everything here is read and checked once, when a client is made: a bad file, token, metadata
key or retry setting fails at construction with a message naming the option (never the token).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import grpc

StrPath = str | os.PathLike[str]
MetadataValue = str | bytes
Metadata = tuple[tuple[str, MetadataValue], ...]
MetadataLike = Mapping[str, MetadataValue] | Iterable[tuple[str, MetadataValue]]
ChannelOptions = tuple[tuple[str, Any], ...]

# grpc metadata values are printable ASCII; a bearer token has no spaces either.
_TOKEN = re.compile(r"[!-~]+")
_KEY = re.compile(r"[0-9a-z_.-]+")
_VALUE = re.compile(r"[ -~]*")
ROUTER_SERVICE = "banditd.v1.Router"
# Safe to repeat: the daemon applies a decision's reward at most once (a repeat is DUPLICATE).
# Route is not: a repeat would log a second decision, whose reward never comes.
RETRIED_METHODS = ("Feedback", "FeedbackBatch")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC's retries for Feedback and FeedbackBatch when the daemon answers UNAVAILABLE.

    Set in the channel's service config (`retryPolicy`), so grpc itself retries, with
    exponential backoff and jitter: attempt n+1 waits a random time in
    [0, min(initial_backoff_s · backoff_multiplier^(n-1), max_backoff_s)]. The call's timeout
    covers every attempt. UNAVAILABLE is what the daemon answers when its store cannot take the
    update now (README, status codes); nothing else is retried. Pass `retry=None` to a client
    to turn retries off.
    """

    max_attempts: int = 4  # the first attempt included; gRPC allows 2 to 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts must be 2 to 5 (gRPC's limit), got {self.max_attempts}")
        if not 0.001 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError(
                "need 0.001 <= initial_backoff_s <= max_backoff_s, got"
                f" {self.initial_backoff_s} and {self.max_backoff_s}"
            )
        if self.backoff_multiplier <= 0:
            raise ValueError(f"backoff_multiplier must be > 0, got {self.backoff_multiplier}")

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config (as JSON data) that asks for these retries."""
        return {
            "methodConfig": [
                {
                    "name": [{"service": ROUTER_SERVICE, "method": m} for m in RETRIED_METHODS],
                    "retryPolicy": {
                        "maxAttempts": self.max_attempts,
                        "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                        "maxBackoff": f"{self.max_backoff_s:.3f}s",
                        "backoffMultiplier": self.backoff_multiplier,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }


DEFAULT_RETRY = RetryPolicy()


def retry_options(retry: RetryPolicy | None) -> ChannelOptions:
    """Channel options that turn gRPC's retries on with `retry`'s service config, or off."""
    if retry is None:
        return (("grpc.enable_retries", 0),)
    config = json.dumps(retry.service_config(), sort_keys=True)
    return (("grpc.enable_retries", 1), ("grpc.service_config", config))


def metadata_pairs(metadata: MetadataLike | None) -> Metadata:
    """Checked metadata pairs, in order: lower-case keys (not grpc-*, not authorization, which
    the token sets); str values of printable ASCII, bytes values for keys ending in -bin."""
    if not metadata:
        return ()
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    pairs: list[tuple[str, MetadataValue]] = []
    for key, value in items:
        if not _KEY.fullmatch(key) or key.startswith("grpc-"):
            raise ValueError(
                f"metadata key {key!r}: use lower-case letters, digits, '-', '_' and '.',"
                " not starting with 'grpc-'"
            )
        if key == "authorization":
            raise ValueError("metadata key 'authorization' is set by token= or token_file=")
        if key.endswith("-bin") != isinstance(value, bytes):
            raise ValueError(f"metadata {key!r}: bytes values go with keys ending in -bin only")
        if isinstance(value, str) and not _VALUE.fullmatch(value):
            raise ValueError(f"metadata {key!r}: a str value must be printable ASCII")
        pairs.append((key, value))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class Transport:
    """How a client reaches banditd: the channel (plaintext or TLS) and what every call carries."""

    credentials: grpc.ChannelCredentials | None  # None: plaintext
    options: ChannelOptions  # channel options
    metadata: Metadata = field(repr=False)  # per call; holds the bearer token, so never shown


def transport(
    target: str,
    *,
    tls_ca_file: StrPath | None = None,
    tls_cert_file: StrPath | None = None,
    tls_key_file: StrPath | None = None,
    tls_server_name: str | None = None,
    token: str | None = None,
    token_file: StrPath | None = None,
    allow_insecure: bool = False,
    metadata: MetadataLike | None = None,
) -> Transport:
    """Read the TLS files and the token once, and check they fit together.

    Any TLS file set gives a TLS channel (tls_ca_file verifies the server, else the system roots
    do; tls_cert_file + tls_key_file present a client certificate). tls_server_name is the name
    checked against the server's certificate instead of the target's host (for 127.0.0.1 in a
    pod, say). The token goes in each call's metadata (`authorization: Bearer <token>`), not in
    call credentials, which grpc refuses on a plaintext channel: plaintext is fine to loopback,
    but refused to any other host unless allow_insecure, since the token would cross the network
    in the clear. `metadata` pairs go on every call after the token. Empty strings count as
    unset (an unset environment variable).
    """
    ca, cert, key = (
        Path(p).read_bytes() if p else None for p in (tls_ca_file, tls_cert_file, tls_key_file)
    )
    if (cert is None) != (key is None):
        raise ValueError("tls_cert_file and tls_key_file go together (the client certificate)")
    secure = ca is not None or cert is not None
    if tls_server_name and not secure:
        raise ValueError(
            "tls_server_name needs TLS: set tls_ca_file (or tls_cert_file and tls_key_file)"
        )
    if token and token_file:
        raise ValueError("give token or token_file, not both")
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"token_file {os.fspath(token_file)} is empty")
    pairs: Metadata = ()
    if token:
        if not _TOKEN.fullmatch(token):  # never echo the token itself
            raise ValueError(
                f"the token must be printable ASCII without spaces ({len(token)} characters given)"
            )
        if not secure and not allow_insecure and not is_loopback(target):
            raise ValueError(
                f"refusing to send a bearer token over plaintext to {target}: set tls_ca_file"
                " (TLS), or allow_insecure=True if the network in between is trusted"
            )
        pairs = (("authorization", f"Bearer {token}"),)
    pairs += metadata_pairs(metadata)
    credentials = (
        grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        if secure
        else None
    )
    options = (("grpc.ssl_target_name_override", tls_server_name),) if tls_server_name else ()
    return Transport(credentials, options, pairs)


def is_loopback(target: str) -> bool:
    """Whether a gRPC target stays on this host: a unix socket, localhost, 127.0.0.0/8 or ::1.

    Targets it cannot read (several addresses, a DNS authority) count as remote.
    """
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    rest = target
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if rest.startswith(scheme):
            rest = rest.removeprefix(scheme)
            break
    if rest.startswith("["):  # [::1]:50051
        host = rest[1 : rest.find("]")]
    elif rest.count(":") > 1:  # a bare IPv6 address, no port
        host = rest
    else:
        host = rest.partition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConnectOptions(TypedDict, total=False):
    """How every client here connects (keyword arguments; see `transport`)."""

    tls_ca_file: StrPath | None  # verify the daemon's certificate against this CA (TLS)
    tls_cert_file: StrPath | None  # mTLS: our certificate chain ...
    tls_key_file: StrPath | None  # ... and its key
    tls_server_name: str | None  # the name the daemon's certificate must carry
    token: str | None  # bearer token (authorization metadata on every call)
    token_file: StrPath | None  # ... or read from this file
    allow_insecure: bool  # send the token over plaintext to a non-loopback target
    metadata: MetadataLike | None  # pairs every call carries, after the token
    options: Sequence[tuple[str, Any]]  # extra grpc channel options


class Connection:
    """One channel to banditd, the metadata its calls carry and their default timeout.

    The base of every client here: `aio` picks grpc.aio (use it inside one event loop) or the
    blocking channel (safe to share between threads). Files and token are read here, once:
    after a certificate rotation, make a new client.
    """

    def __init__(
        self, target: str, timeout_s: float, *, aio: bool, **connect: Unpack[ConnectOptions]
    ) -> None:
        unknown = sorted(set(connect) - ConnectOptions.__optional_keys__)
        if unknown:  # **kwargs would take a typo silently
            raise TypeError(f"unknown client options {unknown}; see ConnectOptions")
        t = transport(
            target,
            tls_ca_file=connect.get("tls_ca_file"),
            tls_cert_file=connect.get("tls_cert_file"),
            tls_key_file=connect.get("tls_key_file"),
            tls_server_name=connect.get("tls_server_name"),
            token=connect.get("token"),
            token_file=connect.get("token_file"),
            allow_insecure=connect.get("allow_insecure", False),
            metadata=connect.get("metadata"),
        )
        opts = t.options + tuple(connect.get("options", ()))
        self._channel: Any
        if aio:
            self._channel = (
                grpc.aio.insecure_channel(target, options=opts)
                if t.credentials is None
                else grpc.aio.secure_channel(target, t.credentials, options=opts)
            )
        else:
            self._channel = (
                grpc.insecure_channel(target, options=opts)
                if t.credentials is None
                else grpc.secure_channel(target, t.credentials, options=opts)
            )
        self._metadata = t.metadata
        self._timeout_s = timeout_s

    def _call(self, metadata: MetadataLike | None, timeout_s: float | None) -> dict[str, Any]:
        """Keyword arguments of one call: its timeout and the client's + the call's metadata."""
        pairs = self._metadata + metadata_pairs(metadata)
        return {
            "timeout": self._timeout_s if timeout_s is None else timeout_s,
            "metadata": pairs or None,
        }
