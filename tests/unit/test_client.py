"""banditd.client without a server: which channel it opens and what every call carries.

grpc's channel constructors are replaced by fakes that record their arguments and answer each
RPC with an empty response, so these tests see exactly what the client hands to grpc. Real TLS
handshakes against the daemon are the server side's end-to-end tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from banditd.api.v1 import bandit_pb2 as pb
from banditd.client import (
    DEFAULT_RETRY,
    AsyncClient,
    Client,
    FeedbackStatus,
    RetryPolicy,
    is_loopback,
    transport,
)
from banditd.client.transport import retry_options

TOKEN = "s3cr3t-t0ken_~+/="
RETRY = retry_options(DEFAULT_RETRY)  # every Router client's channel: Feedback retries on
NAME = (("grpc.ssl_target_name_override", "banditd-grpc.llm-serving.svc"),)
RESPONSES: dict[str, Callable[[], Any]] = {
    "Route": pb.RouteResponse,
    "Feedback": pb.FeedbackResponse,
    "FeedbackBatch": pb.FeedbackBatchResponse,
}


@dataclass
class FakeChannel:
    """Stands in for a grpc channel: records every call's method, request and keyword args."""

    target: str
    credentials: Any = None
    options: tuple[Any, ...] = ()
    calls: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    closed: bool = False

    def unary_unary(self, path: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        method = path.rpartition("/")[2]

        def call(request: Any, **kw: Any) -> Any:
            self.calls.append((method, request, kw))
            return RESPONSES[method]()

        return call

    def close(self) -> None:
        self.closed = True


class FakeAioChannel(FakeChannel):
    def unary_unary(self, path: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        sync = super().unary_unary(path)

        async def call(request: Any, **kw: Any) -> Any:
            return sync(request, **kw)

        return call

    async def close(self) -> None:  # type: ignore[override]
        self.closed = True


@dataclass
class Opened:
    """The channels the client opened and the credentials it asked grpc for."""

    channels: list[FakeChannel] = field(default_factory=list)
    ssl: list[dict[str, Any]] = field(default_factory=list)

    @property
    def channel(self) -> FakeChannel:
        (channel,) = self.channels
        return channel


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    record = Opened()

    def insecure(cls: type[FakeChannel]) -> Callable[..., FakeChannel]:
        def make(target: str, options: Any = ()) -> FakeChannel:
            record.channels.append(cls(target, None, tuple(options or ())))
            return record.channels[-1]

        return make

    def secure(cls: type[FakeChannel]) -> Callable[..., FakeChannel]:
        def make(target: str, credentials: Any, options: Any = ()) -> FakeChannel:
            record.channels.append(cls(target, credentials, tuple(options or ())))
            return record.channels[-1]

        return make

    def ssl_channel_credentials(**kwargs: Any) -> str:
        record.ssl.append(kwargs)
        return "ssl-credentials"

    monkeypatch.setattr(grpc, "insecure_channel", insecure(FakeChannel))
    monkeypatch.setattr(grpc, "secure_channel", secure(FakeChannel))
    monkeypatch.setattr(grpc.aio, "insecure_channel", insecure(FakeAioChannel))
    monkeypatch.setattr(grpc.aio, "secure_channel", secure(FakeAioChannel))
    monkeypatch.setattr(grpc, "ssl_channel_credentials", ssl_channel_credentials)
    return record


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    """Three files standing in for ca.crt, tls.crt and tls.key (contents are not parsed here)."""
    files = {}
    for name in ("ca.crt", "tls.crt", "tls.key"):
        files[name] = tmp_path / name
        files[name].write_bytes(f"-----{name}-----\n".encode())
    return files


def _use(client: Client) -> None:
    d = client.route("chat", ["a", "b"], features={"x": 1.0})
    client.feedback(d.decision_id, reward=1.0)
    client.feedback_batch({"chat:00": 0.5})


def test_plain_client_opens_an_insecure_channel_and_sends_no_metadata(opened: Opened) -> None:
    """Client("127.0.0.1:50099"): plaintext, the retry policy's options only, no metadata."""
    with Client("127.0.0.1:50099") as client:
        _use(client)
    channel = opened.channel
    assert (channel.target, channel.credentials, channel.options) == (
        "127.0.0.1:50099",
        None,
        RETRY,
    )
    assert opened.ssl == []
    assert [m for m, _, _ in channel.calls] == ["Route", "Feedback", "FeedbackBatch"]
    assert all(kw == {"timeout": 2.0, "metadata": None} for _, _, kw in channel.calls)
    assert channel.closed


def test_mtls_client_sends_the_three_files_and_the_server_name(
    opened: Opened, pem: dict[str, Path]
) -> None:
    """CA, certificate and key reach grpc.ssl_channel_credentials as bytes; the server name
    becomes the grpc.ssl_target_name_override channel option."""
    Client(
        "127.0.0.1:50099",
        tls_ca_file=pem["ca.crt"],
        tls_cert_file=str(pem["tls.crt"]),
        tls_key_file=pem["tls.key"],
        tls_server_name="banditd-grpc.llm-serving.svc",
    )
    assert opened.ssl == [
        {
            "root_certificates": b"-----ca.crt-----\n",
            "private_key": b"-----tls.key-----\n",
            "certificate_chain": b"-----tls.crt-----\n",
        }
    ]
    channel = opened.channel
    assert channel.credentials == "ssl-credentials"
    assert channel.options == NAME + RETRY


def test_a_ca_alone_gives_tls_without_a_client_certificate(
    opened: Opened, pem: dict[str, Path]
) -> None:
    """tls_ca_file only: the server is verified, no client certificate, no name override."""
    Client("banditd-grpc.llm-serving.svc:50051", tls_ca_file=pem["ca.crt"])
    assert opened.ssl == [
        {"root_certificates": b"-----ca.crt-----\n", "private_key": None, "certificate_chain": None}
    ]
    assert opened.channel.credentials == "ssl-credentials"
    assert opened.channel.options == RETRY


def test_a_client_certificate_alone_verifies_the_server_with_system_roots(
    opened: Opened, pem: dict[str, Path]
) -> None:
    """tls_cert_file + tls_key_file without a CA: TLS, grpc's default roots verify the server."""
    Client("banditd.example:443", tls_cert_file=pem["tls.crt"], tls_key_file=pem["tls.key"])
    assert opened.ssl[0]["root_certificates"] is None
    assert opened.ssl[0]["certificate_chain"] == b"-----tls.crt-----\n"


def test_token_goes_on_every_call_as_bearer_metadata_over_plaintext_loopback(
    opened: Opened,
) -> None:
    """A token is per-call metadata, so it works on a plaintext loopback channel (where grpc's
    call credentials would refuse)."""
    _use(Client("127.0.0.1:50099", token=TOKEN, timeout_s=0.5))
    channel = opened.channel
    assert channel.credentials is None
    assert len(channel.calls) == 3
    for _, _, kw in channel.calls:
        assert kw == {"timeout": 0.5, "metadata": (("authorization", f"Bearer {TOKEN}"),)}


async def test_async_client_sends_the_same_credentials_and_metadata(
    opened: Opened, pem: dict[str, Path], tmp_path: Path
) -> None:
    """AsyncClient takes the same options: a grpc.aio secure channel, the token from a file."""
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")  # a Secret's file often ends in a newline
    async with AsyncClient(
        "127.0.0.1:50099",
        tls_ca_file=pem["ca.crt"],
        tls_cert_file=pem["tls.crt"],
        tls_key_file=pem["tls.key"],
        tls_server_name="banditd-grpc.llm-serving.svc",
        token_file=token_file,
    ) as client:
        d = await client.route("chat", ["a"])
        await client.feedback(d.decision_id, quality=1.0)
        await client.feedback_batch({"chat:00": 0.5})
    channel = opened.channel
    assert isinstance(channel, FakeAioChannel)
    assert channel.credentials == "ssl-credentials"
    assert channel.options == NAME + RETRY
    assert [kw["metadata"] for _, _, kw in channel.calls] == [
        (("authorization", f"Bearer {TOKEN}"),)
    ] * 3
    assert channel.closed


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:50099", "127.9.9.9:1", "localhost:50099", "[::1]:50051", "::1",
     "dns:///localhost:50099", "ipv4:127.0.0.1:50099", "unix:///run/banditd.sock",
     "unix:banditd.sock"],
)  # fmt: skip
def test_loopback_targets(target: str) -> None:
    """Unix sockets, localhost, 127.0.0.0/8 and ::1 stay on this host."""
    assert is_loopback(target)


@pytest.mark.parametrize(
    "target",
    ["10.0.0.7:50051", "banditd-grpc.llm-serving.svc:50051", "[2001:db8::1]:50051",
     "dns://8.8.8.8/localhost:50099", "localhost.example.com:50051", "0.0.0.0:50051"],
)  # fmt: skip
def test_other_targets_are_remote(target: str) -> None:
    """Anything else, including what the parser cannot read, counts as remote."""
    assert not is_loopback(target)


def test_token_over_plaintext_to_a_remote_host_is_refused_unless_allowed(
    opened: Opened, pem: dict[str, Path]
) -> None:
    """A bearer token would cross the network in the clear: refused, unless TLS or opt-in."""
    with pytest.raises(ValueError, match=re.escape("plaintext to 10.0.0.7:50051")) as refused:
        Client("10.0.0.7:50051", token=TOKEN)
    assert TOKEN not in str(refused.value)
    assert opened.channels == []
    Client("10.0.0.7:50051", token=TOKEN, tls_ca_file=pem["ca.crt"])
    Client("10.0.0.7:50051", token=TOKEN, allow_insecure=True)
    assert [c.credentials for c in opened.channels] == ["ssl-credentials", None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tls_cert_file": "tls.crt"}, "go together"),
        ({"tls_key_file": "tls.key"}, "go together"),
        ({"tls_server_name": "banditd"}, "needs TLS"),
        ({"token": TOKEN, "token_file": "token"}, "not both"),
        ({"token": "two words"}, "printable ASCII without spaces"),
        ({"token": "tab\there"}, "printable ASCII without spaces"),
        ({"token": "naïve"}, "printable ASCII without spaces"),
        ({"token_file": "empty"}, "is empty"),
    ],
)
def test_options_that_do_not_fit_together_are_refused(
    opened: Opened, pem: dict[str, Path], tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    """Mistakes fail at construction with a message that names the option, never the token."""
    (tmp_path / "empty").write_text("\n")
    paths = {"tls.crt": pem["tls.crt"], "tls.key": pem["tls.key"], "empty": tmp_path / "empty"}
    resolved = {k: paths.get(v, v) if k.endswith("_file") else v for k, v in kwargs.items()}
    for cls in (Client, AsyncClient):
        with pytest.raises(ValueError, match=message) as refused:
            cls("127.0.0.1:50099", **resolved)  # type: ignore[arg-type]
        assert TOKEN not in str(refused.value)
        assert "two words" not in str(refused.value)
    assert opened.channels == []


def test_a_missing_tls_file_fails_at_construction(tmp_path: Path, opened: Opened) -> None:
    """Files are read when the client is made, not at the first call."""
    with pytest.raises(FileNotFoundError):
        Client("127.0.0.1:50099", tls_ca_file=tmp_path / "missing.crt")
    assert opened.channels == []


def test_empty_strings_count_as_unset(opened: Opened) -> None:
    """Options read from unset environment variables ("") leave the plain channel."""
    Client("127.0.0.1:50099", tls_ca_file="", tls_cert_file="", tls_key_file="", token="")
    assert opened.channel.credentials is None
    assert opened.ssl == []


def test_transport_repr_does_not_show_the_token(opened: Opened) -> None:
    """The token lives in Transport.metadata, which repr leaves out (safe to log)."""
    t = transport("127.0.0.1:50099", token=TOKEN)
    assert t.metadata == (("authorization", f"Bearer {TOKEN}"),)
    assert TOKEN not in repr(t)


def test_feedback_status_names_every_proto_status() -> None:
    """FeedbackStatus has a member per banditd.v1.FeedbackStatus value, named alike; a value
    newer than this client reads as UNSPECIFIED (the number stays in `raw`)."""
    names = {f"FEEDBACK_STATUS_{s.name}": s.value for s in FeedbackStatus}
    assert names == dict(pb.FeedbackStatus.items())
    assert FeedbackStatus(99) is FeedbackStatus.UNSPECIFIED


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"X-Tenant": "a"}, "lower-case"),
        ({"grpc-timeout": "1S"}, "grpc-"),
        ({"authorization": "Bearer x"}, "token="),
        ({"x-trace-bin": "text"}, "-bin"),
        ({"x-trace": b"bytes"}, "-bin"),
        ({"x-tenant": "caf\u00e9"}, "printable ASCII"),
        ({"x-tenant": "two\nlines"}, "printable ASCII"),
    ],
)
def test_metadata_that_grpc_would_refuse_is_refused_at_construction(
    opened: Opened, metadata: dict[str, Any], message: str
) -> None:
    """Client metadata is checked when the client is made, call metadata when the call is."""
    with pytest.raises(ValueError, match=message):
        Client("127.0.0.1:50099", metadata=metadata)
    assert opened.channels == []
    client = Client("127.0.0.1:50099")
    with pytest.raises(ValueError, match=message):
        client.route("chat", ["a"], metadata=metadata)
    assert opened.channel.calls == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"max_attempts": 6},
        {"initial_backoff_s": 0.0},
        {"initial_backoff_s": 3.0, "max_backoff_s": 2.0},
        {"backoff_multiplier": 0.0},
    ],
)
def test_retry_policies_grpc_would_ignore_are_refused(kwargs: dict[str, float]) -> None:
    """gRPC would fail every call of the channel over an invalid retryPolicy (INVALID_ARGUMENT,
    "errors validating service config") or cap maxAttempts at 5 silently; RetryPolicy refuses
    both when it is made."""
    with pytest.raises(ValueError, match=r"max_attempts|backoff"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_an_unknown_client_option_is_a_type_error(opened: Opened) -> None:
    """Options arrive as keyword arguments; a typo is refused, not ignored."""
    with pytest.raises(TypeError, match="tls_ca"):
        Client("127.0.0.1:50099", tls_ca="ca.crt")  # type: ignore[call-arg]
    assert opened.channels == []
