"""rediss:// with an ACL user and mutual TLS, against a real redis-server built with TLS."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from banditd.errors import StateUnavailableError
from banditd.state.connection import RedisConnection, connect
from banditd.state.redis_store import RedisModelStore
from banditd.types import ModelKey, ModelSpec, PendingDecision
from tests.integration.conftest import free_port, start_redis


def make_certs(d: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=banditd-test-ca")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
            "-extfile", "san.ext")  # fmt: skip


async def test_store_over_mutual_tls_with_acl_user(tmp_path: Path):
    """Records, settles and loads over rediss:// as an ACL user; a wrong password is refused."""
    make_certs(tmp_path)
    tls_port = free_port()
    proc, port = start_redis(tmp_path, extra=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(tmp_path / "server.crt"),
        "--tls-key-file", str(tmp_path / "server.key"),
        "--tls-ca-cert-file", str(tmp_path / "ca.crt"), "--tls-auth-clients", "yes",
    ))  # fmt: skip
    try:
        plain = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
        await plain.execute_command("ACL", "SETUSER", "banditd", "on", ">s3cret", "~*", "&*",
                                    "+@all")  # fmt: skip
        await plain.aclose()
        conn = RedisConnection(
            f"rediss://127.0.0.1:{tls_port}/0", username="banditd", password="s3cret",
            tls_ca_file=str(tmp_path / "ca.crt"), tls_cert_file=str(tmp_path / "client.crt"),
            tls_key_file=str(tmp_path / "client.key"), timeout_s=5.0,
        )  # fmt: skip
        store = RedisModelStore(connect(conn))
        spec = ModelSpec(dim=2, fingerprint="f")
        d = PendingDecision("p:1", "p", "", "a", np.array([1.0, 0.5]), 1.0, 0, 0.0, 1e12)
        try:
            await store.record(d)
            await store.settle("p:1", 1.0, 1.0, spec)
            snap = await store.load(ModelKey("p"), ["a"], spec)
        finally:
            await store.close()
        assert snap.arms["a"].n == 1
        assert not snap.degraded

        bad = RedisModelStore(connect(RedisConnection(
            conn.url, username="banditd", password="wrong", tls_ca_file=conn.tls_ca_file,
            tls_cert_file=conn.tls_cert_file, tls_key_file=conn.tls_key_file, timeout_s=5.0,
        )))  # fmt: skip
        try:
            with pytest.raises(StateUnavailableError):
                await bad.settle("p:1", 1.0, 1.0, spec)
        finally:
            await bad.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
