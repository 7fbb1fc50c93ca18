"""TLS and mTLS on the gRPC listeners, with certificates made in the test (pki.py).

TLS works, plaintext is refused by a TLS server, mTLS refuses a client without a certificate
and one signed by another CA, a rotated certificate is used without a restart, probes keep
working on the plaintext health listener, and a non-loopback plaintext listen is refused at
start."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import Settings
from banditd.server.app import Daemon, build_daemon
from tests.integration.conftest import daemon_settings, free_port
from tests.integration.pki import CA, Issued

ROOT = Path(__file__).resolve().parents[2]
ROUTE = pb.RouteRequest(
    policy="chat",
    context=pb.Context(features={"x1": 0.5}),
    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
)


def tls_settings(server: Issued, ca: CA | None = None, **more: Any) -> Settings:
    tls: dict[str, Any] = {"cert_file": str(server.cert), "key_file": str(server.key),
                           "reload_check_s": 0}  # fmt: skip
    if ca is not None:
        tls |= {"client_ca_file": str(ca.cert), "require_client_cert": True}
    return daemon_settings(server={
        "listen": "127.0.0.1:0", "metrics_listen": "", "admin_listen": "", "grace_s": 0,
        "health_listen": "127.0.0.1:0", "tls": tls, **more,
    })  # fmt: skip


def channel(port: int, ca: CA, client: Issued | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


async def route(ch: grpc.aio.Channel) -> str:
    """The arm, or the status name when the call fails (a failed handshake is UNAVAILABLE)."""
    try:
        return str((await pb_grpc.RouterStub(ch).Route(ROUTE, timeout=10)).arm_id)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    finally:
        await ch.close()


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "pki")


@pytest.fixture
async def tls_daemon(ca: CA) -> AsyncIterator[Daemon]:
    d = build_daemon(tls_settings(ca.issue("server", "banditd")))
    await d.start()
    yield d
    await d.stop(grace_s=0)


async def test_tls_works_and_plaintext_is_refused(ca: CA, tls_daemon: Daemon) -> None:
    """A client trusting the CA routes; a plaintext client cannot even hand-shake."""
    assert await route(channel(tls_daemon.port, ca)) in {"a", "b", "c"}
    plain = grpc.aio.insecure_channel(f"127.0.0.1:{tls_daemon.port}")
    assert await route(plain) == "UNAVAILABLE"


async def test_probes_use_the_plaintext_health_listener_which_serves_nothing_else(
    tls_daemon: Daemon,
) -> None:
    """Kubelet gRPC probes speak no TLS: health answers on health_listen, Route does not."""
    _, port = tls_daemon.listeners["health"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await pb_grpc.RouterStub(ch).Route(ROUTE, timeout=10)
        assert exc.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_mtls_refuses_clients_without_a_certificate_or_from_another_ca(
    ca: CA, tmp_path: Path
) -> None:
    """require_client_cert: no certificate and a foreign CA's certificate both fail the
    handshake; the CA's own client certificate routes."""
    other = CA(tmp_path / "other", "other-ca")
    d = build_daemon(tls_settings(ca.issue("server", "banditd"), ca))
    await d.start()
    try:
        assert await route(channel(d.port, ca)) == "UNAVAILABLE"
        assert await route(channel(d.port, ca, other.issue("intruder", "gateway"))) == "UNAVAILABLE"
        assert await route(channel(d.port, ca, ca.issue("client", "gateway"))) in {"a", "b", "c"}
    finally:
        await d.stop(grace_s=0)


async def test_a_rotated_certificate_is_used_without_a_restart(ca: CA, tmp_path: Path) -> None:
    """cert-manager replaces the files in place: the next handshake presents the new
    certificate (here from a new CA, so a client trusting only the new CA tells them apart)."""
    server = ca.issue("server", "banditd")
    d = build_daemon(tls_settings(server))
    await d.start()
    try:
        assert await route(channel(d.port, ca)) in {"a", "b", "c"}
        renewed_ca = CA(tmp_path / "renewed", "renewed-ca")
        renewed = renewed_ca.issue("server2", "banditd")
        shutil.copyfile(renewed.cert, server.cert)  # as a Secret volume update lands
        shutil.copyfile(renewed.key, server.key)
        os.utime(server.cert, ns=(1, os.stat(server.cert).st_mtime_ns + 10**9))
        assert await route(channel(d.port, renewed_ca)) in {"a", "b", "c"}
        assert await route(channel(d.port, ca)) == "UNAVAILABLE"  # the old CA no longer works
    finally:
        await d.stop(grace_s=0)


def test_a_non_loopback_plaintext_listen_is_refused_at_start() -> None:
    """0.0.0.0 without TLS is a configuration error naming the ways out; loopback, a Unix
    socket, TLS or allow_insecure = true are accepted."""
    with pytest.raises(ValidationError, match=r"allow_insecure.*|server.tls"):
        Settings(server={"listen": "0.0.0.0:50051"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="admin_listen"):
        Settings(server={"admin_listen": "0.0.0.0:50053"})  # type: ignore[arg-type]
    Settings(server={"listen": "0.0.0.0:50051", "allow_insecure": True})  # type: ignore[arg-type]
    Settings(server={"listen": "unix:/tmp/banditd.sock"})  # type: ignore[arg-type]
    Settings(server={"listen": "[::1]:50051"})  # type: ignore[arg-type]


def test_serve_and_check_config_refuse_it_with_exit_2() -> None:
    """The command line says what is wrong and exits 2, before listening on anything."""
    for command in ("check-config", "serve"):
        done = subprocess.run(
            [sys.executable, "-m", "banditd", command, "--server.listen", "0.0.0.0:1"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "BANDITD_CONFIG": ""},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, (command, done.stderr[-500:])
        assert "not a loopback address" in done.stderr


async def test_the_admin_listener_serves_tls_too(ca: CA) -> None:
    """With TLS on, Admin's own listener speaks it as well (each listener has credentials of
    its own: sharing one dynamic credential left the second port without a certificate)."""
    settings = tls_settings(ca.issue("server", "banditd"), admin_listen="127.0.0.1:0")
    d = build_daemon(settings)
    await d.start()
    try:
        _, admin_port = d.listeners["admin"]
        async with channel(admin_port, ca) as ch:
            listed = await apb_grpc.AdminStub(ch).ListPolicies(apb.ListPoliciesRequest())
        assert [p.name for p in listed.policies] == ["chat"]
        assert await route(channel(d.port, ca)) in {"a", "b", "c"}
    finally:
        await d.stop(grace_s=0)


def test_metrics_can_be_served_over_tls(ca: CA, tmp_path: Path) -> None:
    """server.metrics_tls: /metrics answers https with the server's certificate, not http."""
    server = ca.issue("server", "banditd")
    metrics_port = free_port()
    config = tmp_path / "banditd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\nadmin_listen = ""\n'
        f'metrics_listen = "127.0.0.1:{metrics_port}"\nmetrics_tls = true\n'
        f'[server.tls]\ncert_file = "{server.cert}"\nkey_file = "{server.key}"\n'
        '[policies.chat]\narms = ["a"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "banditd", "serve", "--config", str(config)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(ca.cert))
    try:
        body = b""
        for _ in range(300):  # until it listens (bounded; no timing assumption)
            try:
                url = f"https://127.0.0.1:{metrics_port}/metrics"
                with urllib.request.urlopen(url, context=context, timeout=5) as reply:
                    body = reply.read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, "daemon exited"
                time.sleep(0.1)
        assert b"banditd_build_info" in body
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
