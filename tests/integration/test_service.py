"""The gRPC edge over loopback: round trips, every error status, health and reflection."""

from __future__ import annotations

import math

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.client import AsyncClient, FeedbackStatus, feedback_request, route_request
from banditd.server.app import Daemon, build_daemon
from tests.integration.conftest import daemon_settings

ARMS = ["a", "b", "c"]


async def test_route_then_feedback_round_trip(stub: pb_grpc.RouterStub, daemon: Daemon) -> None:
    """Route answers one of the candidates with scores for all; Feedback applies the reward."""
    resp = await stub.Route(route_request("chat", ARMS, features={"x1": 0.2}))
    assert resp.arm_id in ARMS
    assert [s.arm_id for s in resp.scores] == ARMS
    assert sum(s.propensity for s in resp.scores) == pytest.approx(1.0)
    assert resp.algorithm == "linucb"
    assert resp.pipeline_fingerprint
    fb = await stub.Feedback(feedback_request(resp.decision_id, 1.0))
    assert fb.status == pb.FEEDBACK_STATUS_APPLIED
    assert (fb.arm_id, fb.reward, fb.model_version) == (resp.arm_id, 1.0, 1)
    sample = daemon.metrics.registry.get_sample_value
    assert sample("banditd_model_version", {"policy": "chat"}) == 1  # before any Route
    again = await stub.Route(route_request("chat", ARMS, features={"x1": 0.2}))
    assert again.model_version == 1


async def test_duplicate_feedback_is_acknowledged_not_applied(stub: pb_grpc.RouterStub) -> None:
    """A repeated Feedback is OK with status DUPLICATE and the model version does not move."""
    resp = await stub.Route(route_request("chat", ARMS))
    await stub.Feedback(feedback_request(resp.decision_id, 1.0))
    dup = await stub.Feedback(feedback_request(resp.decision_id, 0.0))
    assert dup.status == pb.FEEDBACK_STATUS_DUPLICATE
    assert (dup.reward, dup.model_version) == (1.0, 1)
    assert (await stub.Route(route_request("chat", ARMS))).model_version == 1


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (route_request("chat", []), grpc.StatusCode.INVALID_ARGUMENT, "no candidates"),
        (route_request("chat", ["a", "a"]), grpc.StatusCode.INVALID_ARGUMENT, "duplicate"),
        (route_request("chat", ["zz"]), grpc.StatusCode.INVALID_ARGUMENT, "unknown arm"),
        (route_request("nope", ARMS), grpc.StatusCode.INVALID_ARGUMENT, "unknown policy"),
        (
            route_request("chat", ARMS, features={"x1": math.nan}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "finite",
        ),
        (
            route_request("chat", ARMS, features={"x9": 1.0}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown feature",
        ),
        (
            route_request("chat", [{"id": "a", "features": [1.0]}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "disjoint",
        ),
        (
            route_request("chat", [{"id": "a", "cost": math.inf}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "non-finite",
        ),
    ],
)
async def test_bad_route_requests_get_invalid_argument(
    stub: pb_grpc.RouterStub, daemon: Daemon, request_: pb.RouteRequest, code: grpc.StatusCode,
    message: str,
) -> None:  # fmt: skip
    """Malformed Route requests are INVALID_ARGUMENT with an actionable message."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Route(request_)
    assert exc.value.code() is code
    assert message in (exc.value.details() or "")
    assert getattr(daemon.store, "pending_count", 0) == 0


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        (  # context.text "XX" replaced by bytes that are not UTF-8
            "Route",
            route_request("chat", ARMS, text="XX").SerializeToString().replace(b"XX", b"\xff\xfe"),
        ),
        ("Route", b"\xff\xff\xff"),  # not a protobuf message at all
        ("Feedback", b"\x0a\x02\xc3\x28"),  # decision_id: an invalid 2-byte UTF-8 sequence
    ],
)
async def test_unparseable_requests_get_invalid_argument(
    daemon: Daemon, method: str, raw: bytes
) -> None:
    """Bytes protobuf cannot parse are INVALID_ARGUMENT naming the message type (grpcio alone
    would answer UNKNOWN), are counted, and record no decision."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        call = channel.unary_unary(f"/banditd.v1.Router/{method}")  # raw bytes both ways
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call(raw)
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"not a valid banditd.v1.{method}Request" in (exc.value.details() or "")
    assert "UTF-8" in (exc.value.details() or "")
    assert getattr(daemon.store, "pending_count", 0) == 0
    sample = daemon.metrics.registry.get_sample_value
    assert sample("banditd_rpc_requests_total", {"rpc": method, "code": "INVALID_ARGUMENT"}) == 1


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda d: feedback_request("chat:0000", 1.0), grpc.StatusCode.NOT_FOUND, "unknown"),
        (lambda d: feedback_request("garbage", 1.0), grpc.StatusCode.INVALID_ARGUMENT, "issued"),
        (lambda d: feedback_request(d, math.nan), grpc.StatusCode.INVALID_ARGUMENT, "finite"),
        (lambda d: feedback_request(d), grpc.StatusCode.INVALID_ARGUMENT, "reward or metrics"),
        (lambda d: feedback_request(d, bogus=1.0), grpc.StatusCode.INVALID_ARGUMENT, "unknown"),
    ],
)
async def test_bad_feedback_gets_a_clear_status(
    stub: pb_grpc.RouterStub, make: object, code: grpc.StatusCode, message: str
) -> None:
    """Unknown decisions are NOT_FOUND; malformed feedback is INVALID_ARGUMENT."""
    resp = await stub.Route(route_request("chat", ARMS))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Feedback(make(resp.decision_id))  # type: ignore[operator]
    assert exc.value.code() is code
    assert message in (exc.value.details() or "")
    assert (await stub.Feedback(feedback_request(resp.decision_id, 1.0))).model_version == 1


async def test_expired_feedback_is_not_found_with_the_reason() -> None:
    """After the reward wait window, Feedback is NOT_FOUND saying it expired; the sweep ran."""
    settings = daemon_settings(
        policies={"chat": {"arms": ARMS, "reward_wait_s": 0.05, "default_reward": 0.0}},
        server={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "admin_listen": "",
            "sweep_interval_s": 0.01,
        },
    )
    d = build_daemon(settings)
    await d.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") as channel:
            stub = pb_grpc.RouterStub(channel)
            resp = await stub.Route(route_request("chat", ARMS))
            import asyncio

            await asyncio.sleep(0.1)
            assert await d.sweep_once() == 1
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Feedback(feedback_request(resp.decision_id, 1.0))
            assert exc.value.code() is grpc.StatusCode.NOT_FOUND
            assert "expired" in (exc.value.details() or "")
            assert "default reward 0.0" in (exc.value.details() or "")
            after = await stub.Route(route_request("chat", ARMS))
            assert after.model_version == 1  # the default reward was learned once
    finally:
        await d.stop(grace_s=0)


async def test_huge_payload_is_rejected_before_the_model(daemon: Daemon) -> None:
    """A request over max_message_bytes is RESOURCE_EXHAUSTED; nothing is logged."""
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{daemon.port}", options=[("grpc.max_send_message_length", 8 << 20)]
    ) as channel:
        stub = pb_grpc.RouterStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Route(route_request("chat", ARMS, text="x" * (2 << 20)))
    assert exc.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert getattr(daemon.store, "pending_count", 0) == 0


async def test_health_and_reflection(daemon: Daemon) -> None:
    """grpc.health.v1 says SERVING for liveness, readiness (the Router service) and the learning
    path; reflection lists the Router service."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "banditd.v1.Router", "banditd.v1.Learning"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = refl.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
        names = {s.name for s in reply.list_services_response.service}
        assert "banditd.v1.Router" in names


async def test_each_rpc_logs_one_canonical_line_with_its_request_id(
    stub: pb_grpc.RouterStub,
) -> None:
    """The handler logs rpc.completed once, with the caller's x-request-id and the rpc name."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        await stub.Route(route_request("chat", ARMS), metadata=(("x-request-id", "req-42"),))
    lines = [e for e in logs if e["event"] == "rpc.completed"]
    assert len(lines) == 1
    assert (lines[0]["request_id"], lines[0]["rpc"], lines[0]["code"]) == ("req-42", "Route", "OK")


async def test_feedback_batch_applies_each_item_once_and_reports_each_error(
    daemon: Daemon,
) -> None:
    """A batch is its items' Feedback calls in order: a repeat inside the batch is DUPLICATE,
    bad items carry the code their own call would get, the good ones are applied once."""
    async with AsyncClient(f"127.0.0.1:{daemon.port}") as client:
        first = await client.route("chat", ARMS)
        second = await client.route("chat", ARMS)
        results = await client.feedback_batch([
            feedback_request(first.decision_id, 1.0),
            feedback_request(first.decision_id, 0.0),  # repeat inside the batch
            feedback_request("chat:0000", 1.0),  # never issued
            feedback_request("garbage", 1.0),  # not a decision id at all
            feedback_request(second.decision_id, math.nan),
            feedback_request(second.decision_id, 0.5),  # the NaN changed nothing
        ])  # fmt: skip
        after = await client.route("chat", ARMS)
    ok, not_found, invalid = (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND,
                              grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
    assert [r.code for r in results] == [ok, ok, not_found, invalid, invalid, ok]
    assert [r.decision_id for r in results][:3] == [first.decision_id] * 2 + ["chat:0000"]
    applied = [r.result for r in results if r.result is not None]
    assert [a.status for a in applied] == [FeedbackStatus.APPLIED, FeedbackStatus.DUPLICATE,
                                           FeedbackStatus.APPLIED]  # fmt: skip
    assert applied[1].reward == 1.0  # the duplicate reports the applied reward
    assert "finite" in results[4].error
    assert "unknown" in results[2].error
    assert after.model_version == 2  # two rewards applied, once each
    outcomes = [
        daemon.metrics.registry.get_sample_value("banditd_feedback_outcomes_total", {"outcome": o})
        for o in ("applied", "unknown")
    ]
    assert outcomes == [2, 1]


async def test_feedback_batch_over_the_limit_is_refused_whole() -> None:
    """More items than server.feedback_batch_max: INVALID_ARGUMENT, and nothing is applied."""
    settings = daemon_settings(
        server={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "admin_listen": "",
            "feedback_batch_max": 2,
        }
    )
    daemon = build_daemon(settings)
    await daemon.start()
    try:
        async with AsyncClient(f"127.0.0.1:{daemon.port}") as client:
            ids = [(await client.route("chat", ARMS)).decision_id for _ in range(3)]
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await client.feedback_batch(dict.fromkeys(ids, 1.0))
            assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "feedback_batch_max" in (exc.value.details() or "")
            results = await client.feedback_batch(dict.fromkeys(ids[:2], 1.0))
            assert [r.ok for r in results] == [True, True]
            assert (await client.route("chat", ARMS)).model_version == 2
    finally:
        await daemon.stop(grace_s=0)
