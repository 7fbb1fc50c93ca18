"""Callers and what they may do (docs/security.md), over mTLS and bearer tokens on a real
redis-server: unauthenticated calls and a Route caller's Admin calls are refused, a tenant is
refused on another tenant's policy for Route, Feedback (with a real decision id of the other
tenant), export and reset, and the model is unchanged after each refusal; Admin calls are
audited; Admin on its own listener is not on the Route port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import structlog

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import Daemon, build_daemon
from banditd.server.auth import token_hash
from tests.integration.conftest import daemon_settings
from tests.integration.pki import CA

TENANT_A = "spiffe://test/ns/a/sa/gateway"
POLICY = {"arms": ["x", "y"], "features": {"numeric": ["x1"]}, "reward_wait_s": 60}


def route(policy: str) -> pb.RouteRequest:
    return pb.RouteRequest(policy=policy, context=pb.Context(features={"x1": 0.5}),
                           candidates=[pb.Candidate(id="x"), pb.Candidate(id="y")])  # fmt: skip


class Stubs:
    """Router and Admin stubs on one channel, every call with the caller's token (if any)."""

    def __init__(self, channel: grpc.aio.Channel, token: str | None = None) -> None:
        self.channel = channel
        self.router = pb_grpc.RouterStub(channel)
        self.admin = apb_grpc.AdminStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def code(self, call: Any, request: Any) -> str:
        """The status name of `call(request)`."""
        try:
            await call(request, metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "OK"


@pytest.fixture
async def setup(
    tmp_path: Path, redis_url: str
) -> AsyncIterator[tuple[Daemon, CA, dict[str, Stubs]]]:
    """An mTLS daemon and four callers: tenant-a (its certificate's SPIFFE id, route+feedback
    on a), tenant-b (a token, route+feedback on b), admin-a (two tokens, one from tokens_file,
    admin on a), ops (certificate CN=ops, admin everywhere)."""
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    ca = CA(tmp_path / "pki")
    server = ca.issue("server", "banditd")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# rotated in\nadmin-a {token_hash('admin-a-new')}\n")
    settings = daemon_settings(
        server={
            "listen": "127.0.0.1:0", "metrics_listen": "", "admin_listen": "", "grace_s": 0,
            "tls": {"cert_file": str(server.cert), "key_file": str(server.key),
                    "client_ca_file": str(ca.cert), "require_client_cert": True},
        },
        store={"backend": "redis", "redis": {"url": redis_url}},
        policies={"a": POLICY, "b": POLICY},
        auth={
            "tokens_file": str(tokens),
            "callers": [
                {"name": "tenant-a", "identities": [TENANT_A], "policies": ["a"]},
                {"name": "tenant-b", "token_sha256": [token_hash("b-token")], "policies": ["b"]},
                {"name": "admin-a", "token_sha256": [token_hash("admin-a-old")],
                 "roles": ["admin"], "policies": ["a"]},
                {"name": "ops", "identities": ["CN=ops"], "roles": ["admin"]},
            ],
        },
    )  # fmt: skip
    daemon = build_daemon(settings)
    await daemon.start()

    def connect(cert: str, token: str | None = None) -> Stubs:
        """A channel with a client certificate for CN=`cert` (tenant-a also gets its SPIFFE
        id) and, if given, a bearer token (mTLS is required, so token callers have a
        certificate too; a token, when sent, is what identifies the caller)."""
        sans = f"URI:{TENANT_A}" if cert == "tenant-a" else "IP:127.0.0.1"
        issued = ca.issue(cert, cert, sans)
        credentials = grpc.ssl_channel_credentials(
            ca.cert.read_bytes(), issued.key.read_bytes(), issued.cert.read_bytes()
        )
        ch = grpc.aio.secure_channel(f"127.0.0.1:{daemon.port}", credentials)
        return Stubs(ch, token)

    stubs = {
        "anonymous": connect("nobody"),  # a valid certificate no caller claims
        "wrong-token": connect("pipeline", token="nope"),
        "tenant-a": connect("tenant-a"),
        "tenant-b": connect("pipeline-b", token="b-token"),
        "admin-a": connect("pipeline-c", token="admin-a-old"),
        "admin-a-new": connect("pipeline-d", token="admin-a-new"),
        "ops": connect("ops"),
    }
    yield daemon, ca, stubs
    for s in stubs.values():
        await s.channel.close()
    await daemon.stop(grace_s=0)


async def state_of(ops: Stubs, policy: str) -> apb.PolicyState:
    return await ops.admin.ExportPolicy(apb.ExportPolicyRequest(policy=policy))


async def test_unauthenticated_calls_are_refused(
    setup: tuple[Daemon, CA, dict[str, Stubs]],
) -> None:
    """A certificate no caller claims and no token, or a token nobody has: UNAUTHENTICATED, on
    Router and Admin alike. (No certificate at all fails the mTLS handshake: test_tls.py.)"""
    _, _, s = setup
    for who in ("anonymous", "wrong-token"):
        assert await s[who].code(s[who].router.Route, route("a")) == "UNAUTHENTICATED"
        admin = s[who].admin
        assert await s[who].code(admin.ListPolicies, apb.ListPoliciesRequest()) == (
            "UNAUTHENTICATED"
        )
        assert await s[who].code(admin.ResetPolicy, apb.ResetPolicyRequest(policy="a")) == (
            "UNAUTHENTICATED"
        )


async def test_a_route_caller_cannot_call_admin(
    setup: tuple[Daemon, CA, dict[str, Stubs]],
) -> None:
    """tenant-a routes and learns on a, but its Admin calls are PERMISSION_DENIED and change
    nothing."""
    _, _, s = setup
    a = s["tenant-a"]
    d = await a.router.Route(route("a"), metadata=a.metadata)
    await a.router.Feedback(pb.FeedbackRequest(decision_id=d.decision_id, reward=1.0))
    before = await state_of(s["ops"], "a")
    for call, request in (
        (a.admin.ResetPolicy, apb.ResetPolicyRequest(policy="a")),
        (a.admin.RemoveArm, apb.ArmRequest(policy="a", arm_id="x")),
        (a.admin.ImportPolicy, apb.ImportPolicyRequest(state=before, replace=True)),
        (a.admin.ExportPolicy, apb.ExportPolicyRequest(policy="a")),
    ):
        assert await a.code(call, request) == "PERMISSION_DENIED"
    assert await state_of(s["ops"], "a") == before


async def test_a_tenant_is_refused_on_another_tenants_policy(
    setup: tuple[Daemon, CA, dict[str, Stubs]],
) -> None:
    """tenant-a cannot route on b, nor send feedback for b's real decisions (alone or in a
    batch); admin-a cannot export, reset or list b; b's model is bit for bit unchanged."""
    _, _, s = setup
    a, b, admin_a, ops = s["tenant-a"], s["tenant-b"], s["admin-a"], s["ops"]
    decisions = []
    for _ in range(3):
        d = await b.router.Route(route("b"), metadata=b.metadata)
        decisions.append(d.decision_id)
    await b.router.Feedback(pb.FeedbackRequest(decision_id=decisions[0], reward=1.0),
                            metadata=b.metadata)  # fmt: skip
    before = await state_of(ops, "b")
    assert await a.code(a.router.Route, route("b")) == "PERMISSION_DENIED"
    for decision_id in decisions:
        request = pb.FeedbackRequest(decision_id=decision_id, reward=1.0)
        assert await a.code(a.router.Feedback, request) == "PERMISSION_DENIED"
    batch = pb.FeedbackBatchRequest(items=[pb.FeedbackRequest(decision_id=decisions[1], reward=1)])
    assert await a.code(a.router.FeedbackBatch, batch) == "PERMISSION_DENIED"
    for call, request in (
        (admin_a.admin.ExportPolicy, apb.ExportPolicyRequest(policy="b")),
        (admin_a.admin.ResetPolicy, apb.ResetPolicyRequest(policy="b")),
        (admin_a.admin.DeleteSegment, apb.DeleteSegmentRequest(policy="b", segment="")),
        (admin_a.admin.ListArms, apb.ListArmsRequest(policy="b")),
    ):
        assert await admin_a.code(call, request) == "PERMISSION_DENIED"
    assert await state_of(ops, "b") == before
    # b's rewards still join for b, once
    reply = await b.router.Feedback(pb.FeedbackRequest(decision_id=decisions[1], reward=0.5),
                                    metadata=b.metadata)  # fmt: skip
    assert reply.status == pb.FEEDBACK_STATUS_APPLIED


async def test_a_tenant_cannot_learn_that_another_policy_exists(
    setup: tuple[Daemon, CA, dict[str, Stubs]],
) -> None:
    """ListPolicies shows a caller only its own policies, and asking for b or for a policy that
    does not exist gets the same answer."""
    _, _, s = setup
    admin_a = s["admin-a"]
    listed = await admin_a.admin.ListPolicies(apb.ListPoliciesRequest(), metadata=admin_a.metadata)
    assert [p.name for p in listed.policies] == ["a"]
    answers = []
    for policy in ("b", "no-such-policy"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await admin_a.admin.ListArms(apb.ListArmsRequest(policy=policy),
                                         metadata=admin_a.metadata)  # fmt: skip
        answers.append((exc.value.code(), (exc.value.details() or "").replace(f"'{policy}'", "P")))
    assert answers[0] == answers[1]
    everything = await s["ops"].admin.ListPolicies(apb.ListPoliciesRequest())
    assert [p.name for p in everything.policies] == ["a", "b"]


async def test_both_tokens_of_a_rotating_caller_work(
    setup: tuple[Daemon, CA, dict[str, Stubs]],
) -> None:
    """The old token (in the config) and the new one (in tokens_file) are the same caller."""
    _, _, s = setup
    for who in ("admin-a", "admin-a-new"):
        stubs = s[who]
        assert await stubs.code(stubs.admin.ListArms, apb.ListArmsRequest(policy="a")) == "OK"


async def test_admin_calls_are_audited(
    setup: tuple[Daemon, CA, dict[str, Stubs]],
) -> None:
    """Each Admin call, allowed or refused, is one admin.audit line (who, what, which
    policy, result) and one count."""
    daemon, _, s = setup
    registry = daemon.metrics.registry

    def audited() -> int:
        """Audited ResetPolicy calls so far (the line and the count come after the status is
        sent, so the client may hear first: wait for them, bounded, rather than race them)."""
        return int(sum(
            registry.get_sample_value("banditd_admin_calls_total",
                                      {"rpc": "ResetPolicy", "code": code}) or 0
            for code in ("OK", "PERMISSION_DENIED")
        ))  # fmt: skip

    with structlog.testing.capture_logs() as logs:
        await s["ops"].admin.ResetPolicy(apb.ResetPolicyRequest(policy="a"))
        await s["admin-a"].code(s["admin-a"].admin.ResetPolicy, apb.ResetPolicyRequest(policy="b"))
        for _ in range(500):
            if audited() >= 2:
                break
            await asyncio.sleep(0.01)
    audit = [e for e in logs if e["event"] == "admin.audit"]
    assert [(e["caller"], e["rpc"], e["policy"], e["code"]) for e in audit] == [
        ("ops", "ResetPolicy", "a", "OK"),
        ("admin-a", "ResetPolicy", "b", "PERMISSION_DENIED"),
    ]
    for code in ("OK", "PERMISSION_DENIED"):
        labels = {"rpc": "ResetPolicy", "code": code}
        assert registry.get_sample_value("banditd_admin_calls_total", labels) == 1


async def test_admin_on_its_own_listener_is_not_served_on_the_route_port() -> None:
    """The default: Admin on a loopback listener of its own; the Route port does not serve it."""
    settings = daemon_settings(server={"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
                                       "metrics_listen": "", "grace_s": 0})  # fmt: skip
    daemon = build_daemon(settings)
    await daemon.start()
    try:
        _, admin_port = daemon.listeners["admin"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await apb_grpc.AdminStub(ch).ListPolicies(apb.ListPoliciesRequest())
            assert exc.value.code() is grpc.StatusCode.UNIMPLEMENTED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{admin_port}") as ch:
            listed = await apb_grpc.AdminStub(ch).ListPolicies(apb.ListPoliciesRequest())
            assert [p.name for p in listed.policies] == ["chat"]
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await pb_grpc.RouterStub(ch).Route(route("chat"))
            assert exc.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await daemon.stop(grace_s=0)


def test_identities_need_required_client_certificates() -> None:
    """A caller named by certificate identity on a server that does not require client
    certificates could never be recognised: refused at start."""
    from pydantic import ValidationError

    from banditd.config import Settings

    with pytest.raises(ValidationError, match="require_client_cert"):
        Settings(auth={"callers": [{"name": "a", "identities": ["CN=a"]}]})  # type: ignore[arg-type]
