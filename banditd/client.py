"""A small Python client for banditd (sync `Client` and asyncio `AsyncClient`).

    from banditd.client import Client
    with Client("127.0.0.1:50051") as bandit:
        d = bandit.route("chat", ["small-8b", "large-70b"], features={"prompt_tokens": 812})
        ...serve the request with d.arm_id...
        bandit.feedback(d.decision_id, reward=1.0)

Over TLS (the daemon's `server.tls`), as a caller it knows (its `[[auth.callers]]`):

    Client("banditd-grpc.llm-serving.svc:50051",
           tls_ca_file="ca.crt",                              # verify the server against this CA
           tls_cert_file="tls.crt", tls_key_file="tls.key")   # mTLS: the client certificate
    Client("127.0.0.1:50051", token_file="/etc/app/banditd-token")   # or a bearer token

Errors arrive as grpc.RpcError with the daemon's status code and message; a caller the daemon
does not know gets UNAUTHENTICATED, one without the role or policy PERMISSION_DENIED.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc

StrPath = str | os.PathLike[str]
Metadata = tuple[tuple[str, str], ...]

# grpc metadata values are printable ASCII; a bearer token has no spaces either.
_TOKEN = re.compile(r"[!-~]+")


@dataclass(frozen=True, slots=True)
class Transport:
    """How a client reaches banditd: the channel (plaintext or TLS) and what every call carries."""

    credentials: grpc.ChannelCredentials | None  # None: plaintext
    options: tuple[tuple[str, str], ...]  # channel options
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
) -> Transport:
    """Read the TLS files and the token once, and check they fit together.

    Any TLS file set gives a TLS channel (tls_ca_file verifies the server, else the system roots
    do; tls_cert_file + tls_key_file present a client certificate). tls_server_name is the name
    checked against the server's certificate instead of the target's host (for 127.0.0.1 in a
    pod, say). The token goes in each call's metadata (`authorization: Bearer <token>`), not in
    call credentials, which grpc refuses on a plaintext channel: plaintext is fine to loopback,
    but refused to any other host unless allow_insecure, since the token would cross the network
    in the clear. Empty strings count as unset (an unset environment variable).
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
    metadata: Metadata = ()
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
        metadata = (("authorization", f"Bearer {token}"),)
    credentials = (
        grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        if secure
        else None
    )
    options = (("grpc.ssl_target_name_override", tls_server_name),) if tls_server_name else ()
    return Transport(credentials, options, metadata)


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


CandidateLike = str | Mapping[str, Any] | pb.Candidate


def _candidate(c: CandidateLike) -> pb.Candidate:
    if isinstance(c, pb.Candidate):
        return c
    if isinstance(c, str):
        return pb.Candidate(id=c)
    return pb.Candidate(**c)


def route_request(
    policy: str,
    candidates: Sequence[CandidateLike],
    features: Mapping[str, float] | None = None,
    text: str = "",
    segment: str = "",
    categorical: Mapping[str, str] | None = None,
    embedding: Sequence[float] = (),
) -> pb.RouteRequest:
    return pb.RouteRequest(
        policy=policy,
        segment=segment,
        context=pb.Context(
            text=text,
            features=dict(features or {}),
            categorical=dict(categorical or {}),
            embedding=list(embedding),
        ),
        candidates=[_candidate(c) for c in candidates],
    )


def feedback_request(
    decision_id: str, reward: float | None = None, **metrics: float
) -> pb.FeedbackRequest:
    request = pb.FeedbackRequest(decision_id=decision_id, metrics=metrics)
    if reward is not None:
        request.reward = reward
    return request


def feedback_batch_request(
    rewards: Mapping[str, float] | Sequence[pb.FeedbackRequest],
) -> pb.FeedbackBatchRequest:
    """{decision_id: reward}, or FeedbackRequests (for metrics), as one FeedbackBatch."""
    if isinstance(rewards, Mapping):
        return pb.FeedbackBatchRequest(
            items=[feedback_request(d, reward) for d, reward in rewards.items()]
        )
    return pb.FeedbackBatchRequest(items=list(rewards))


class Client:
    """Blocking client. One channel; safe to share between threads."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        timeout_s: float = 2.0,
        *,
        tls_ca_file: StrPath | None = None,
        tls_cert_file: StrPath | None = None,
        tls_key_file: StrPath | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        token_file: StrPath | None = None,
        allow_insecure: bool = False,
    ) -> None:
        """Files and token are read here, once (see `transport`): after a certificate rotation,
        make a new client."""
        t = transport(
            target, tls_ca_file=tls_ca_file, tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file, tls_server_name=tls_server_name, token=token,
            token_file=token_file, allow_insecure=allow_insecure,
        )  # fmt: skip
        self._channel = (
            grpc.insecure_channel(target, options=t.options)
            if t.credentials is None
            else grpc.secure_channel(target, t.credentials, options=t.options)
        )
        self._metadata = t.metadata or None
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s

    def route(
        self, policy: str, candidates: Sequence[CandidateLike], **kw: Any
    ) -> pb.RouteResponse:
        response: pb.RouteResponse = self._stub.Route(
            route_request(policy, candidates, **kw),
            timeout=self._timeout_s,
            metadata=self._metadata,
        )
        return response

    def feedback(
        self, decision_id: str, reward: float | None = None, **metrics: float
    ) -> pb.FeedbackResponse:
        response: pb.FeedbackResponse = self._stub.Feedback(
            feedback_request(decision_id, reward, **metrics),
            timeout=self._timeout_s,
            metadata=self._metadata,
        )
        return response

    def feedback_batch(
        self, rewards: Mapping[str, float] | Sequence[pb.FeedbackRequest]
    ) -> list[pb.FeedbackBatchResult]:
        """One result per item, in order; check each result's `code` (0 = OK)."""
        response: pb.FeedbackBatchResponse = self._stub.FeedbackBatch(
            feedback_batch_request(rewards), timeout=self._timeout_s, metadata=self._metadata
        )
        return list(response.results)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client; create and use it inside one event loop."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        timeout_s: float = 2.0,
        *,
        tls_ca_file: StrPath | None = None,
        tls_cert_file: StrPath | None = None,
        tls_key_file: StrPath | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        token_file: StrPath | None = None,
        allow_insecure: bool = False,
    ) -> None:
        """Files and token are read here, once (see `transport`): after a certificate rotation,
        make a new client."""
        t = transport(
            target, tls_ca_file=tls_ca_file, tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file, tls_server_name=tls_server_name, token=token,
            token_file=token_file, allow_insecure=allow_insecure,
        )  # fmt: skip
        self._channel = (
            grpc.aio.insecure_channel(target, options=t.options)
            if t.credentials is None
            else grpc.aio.secure_channel(target, t.credentials, options=t.options)
        )
        self._metadata = t.metadata or None
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s

    async def route(
        self, policy: str, candidates: Sequence[CandidateLike], **kw: Any
    ) -> pb.RouteResponse:
        response: pb.RouteResponse = await self._stub.Route(
            route_request(policy, candidates, **kw),
            timeout=self._timeout_s,
            metadata=self._metadata,
        )
        return response

    async def feedback(
        self, decision_id: str, reward: float | None = None, **metrics: float
    ) -> pb.FeedbackResponse:
        response: pb.FeedbackResponse = await self._stub.Feedback(
            feedback_request(decision_id, reward, **metrics),
            timeout=self._timeout_s,
            metadata=self._metadata,
        )
        return response

    async def feedback_batch(
        self, rewards: Mapping[str, float] | Sequence[pb.FeedbackRequest]
    ) -> list[pb.FeedbackBatchResult]:
        """One result per item, in order; check each result's `code` (0 = OK)."""
        response: pb.FeedbackBatchResponse = await self._stub.FeedbackBatch(
            feedback_batch_request(rewards), timeout=self._timeout_s, metadata=self._metadata
        )
        return list(response.results)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
