"""Every status a client can reach is a documented one: bad bytes on any service, bad Admin
input, a bug in a handler, and inputs too large to echo."""

from __future__ import annotations

import grpc
import pytest
import redis.asyncio as aioredis
import structlog
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import admin_pb2_grpc as apb_grpc
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.client import feedback_request, route_request
from banditd.server.app import Daemon, build_daemon
from tests.integration.traffic import redis_daemon_settings

ARMS = ["a", "b", "c"]
BAD_UTF8 = b"\x0a\x02\xc3\x28"  # field 1, a string of 2 bytes that are not UTF-8
NOT_PROTOBUF = b"\xff\xff\xff"  # a tag with wire type 7: no message parses it
HUGE = "p" * 900_000


def capture() -> structlog.testing.LogCapture:
    return structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars])


# service path, message type, bytes it cannot parse
UNARY = [
    ("/banditd.v1.Router/Route", pb.RouteRequest, BAD_UTF8),
    ("/banditd.v1.Router/Feedback", pb.FeedbackRequest, BAD_UTF8),
    ("/banditd.v1.Router/FeedbackBatch", pb.FeedbackBatchRequest, BAD_UTF8),
    ("/banditd.v1.Router/ReportResidency", pb.ReportResidencyRequest, BAD_UTF8),
    ("/banditd.v1.Router/GetPagingPlan", pb.GetPagingPlanRequest, BAD_UTF8),
    ("/banditd.v1.Admin/ListPolicies", apb.ListPoliciesRequest, NOT_PROTOBUF),
    ("/banditd.v1.Admin/ListArms", apb.ListArmsRequest, BAD_UTF8),
    ("/banditd.v1.Admin/AddArm", apb.ArmRequest, BAD_UTF8),
    ("/banditd.v1.Admin/RemoveArm", apb.ArmRequest, BAD_UTF8),
    ("/banditd.v1.Admin/ResetPolicy", apb.ResetPolicyRequest, BAD_UTF8),
    ("/banditd.v1.Admin/ExportPolicy", apb.ExportPolicyRequest, BAD_UTF8),
    ("/banditd.v1.Admin/ImportPolicy", apb.ImportPolicyRequest, BAD_UTF8),
    ("/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest, BAD_UTF8),
]


@pytest.mark.parametrize(("path", "message", "raw"), UNARY)
async def test_undecodable_unary_requests_get_invalid_argument_on_every_service(
    daemon: Daemon, path: str, message: type[Message], raw: bytes
) -> None:
    """Router, Admin and health answer bytes protobuf cannot parse with INVALID_ARGUMENT
    naming the message type, never grpcio's bare UNKNOWN."""
    with pytest.raises(DecodeError):
        message.FromString(raw)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await channel.unary_unary(path)(raw)  # raw bytes both ways
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"not a valid {message.DESCRIPTOR.full_name}" in (exc.value.details() or "")


async def test_health_watch_still_streams_through_the_guard(daemon: Daemon) -> None:
    """The guarded Watch (a coroutine writing with context.write) streams the status."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await call.read()
        call.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_undecodable_health_watch_gets_invalid_argument(daemon: Daemon) -> None:
    """The server-streaming health Watch refuses bad bytes before it streams anything."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        call = channel.unary_stream("/grpc.health.v1.Health/Watch")(BAD_UTF8)
        assert await call.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid grpc.health.v1.HealthCheckRequest" in await call.details()


async def test_undecodable_reflection_request_gets_invalid_argument_after_good_ones(
    daemon: Daemon,
) -> None:
    """The bidi-streaming reflection service answers the good requests before a bad one, then
    ends the call with INVALID_ARGUMENT."""
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        )()
        await call.write(good)
        reply = reflection_pb2.ServerReflectionResponse.FromString(await call.read())
        assert "banditd.v1.Admin" in {s.name for s in reply.list_services_response.service}
        await call.write(BAD_UTF8)
        await call.done_writing()
        assert await call.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid grpc.reflection.v1alpha.ServerReflectionRequest" in (
            await call.details()
        )


@pytest.fixture
async def redis_daemon(redis_url: str):
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    d = build_daemon(redis_daemon_settings(redis_url))
    await d.start()
    yield d
    await d.stop(grace_s=0)


def arm_sums(dim: int = 3, **fields: object) -> apb.ArmSums:
    sums = {"segment": "", "arm_id": "a", "n": 1, "b": [0.0] * dim,
            "s_upper": [0.0] * (dim * (dim + 1) // 2), **fields}  # fmt: skip
    return apb.ArmSums(**sums)  # type: ignore[arg-type]


def import_request(*arms: apb.ArmSums) -> apb.ImportPolicyRequest:
    return apb.ImportPolicyRequest(policy="chat", state=apb.PolicyState(arms=arms))


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        ("ListArms", apb.ListArmsRequest(policy="no such!"), "policy name"),
        ("ListArms", apb.ListArmsRequest(policy=HUGE), "policy name"),
        ("AddArm", apb.ArmRequest(policy="no such!", arm_id="d"), "policy name"),
        ("AddArm", apb.ArmRequest(policy="chat", arm_id="has space"), "arm id"),
        ("RemoveArm", apb.ArmRequest(policy="", arm_id="a"), "policy name"),
        ("ResetPolicy", apb.ResetPolicyRequest(policy="a{b}"), "policy name"),
        ("ExportPolicy", apb.ExportPolicyRequest(policy=HUGE), "policy name"),
        ("ImportPolicy", apb.ImportPolicyRequest(policy="no such!"), "policy name"),
        ("ImportPolicy", import_request(arm_sums(b=[float("nan"), 0.0, 0.0])), "finite"),
        ("ImportPolicy", import_request(arm_sums(s_upper=[float("inf")] * 6)), "finite"),
        ("ImportPolicy", import_request(arm_sums(dim=2)), "dimension"),
        ("ImportPolicy", import_request(arm_sums(arm_id="two words")), "arm id"),
        ("ImportPolicy", import_request(arm_sums(arm_id="")), "arm id"),
        ("ImportPolicy", import_request(arm_sums(segment="a b")), "segment"),
        ("ImportPolicy", import_request(arm_sums(), arm_sums()), "twice"),
    ],
)
async def test_bad_admin_requests_get_invalid_argument(
    redis_daemon: Daemon, method: str, request_: Message, message: str
) -> None:
    """Malformed Admin input is INVALID_ARGUMENT with a short message (on the Redis store,
    where policy names become keys), never UNKNOWN; nothing is imported."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{redis_daemon.port}") as channel:
        admin = apb_grpc.AdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await getattr(admin, method)(request_)
        exported = await admin.ExportPolicy(apb.ExportPolicyRequest(policy="chat"))
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = exc.value.details() or ""
    assert message in details
    assert len(details.encode()) < 1_000
    assert list(exported.arms) == []


async def test_a_bug_in_a_router_handler_is_internal_naming_the_request_id(
    daemon: Daemon, stub: pb_grpc.RouterStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception is logged as rpc.failed, counted, and answered INTERNAL saying
    it is a bug, with the request id to find the log line."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(daemon.router, "route", broken)
    with capture() as logs, pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Route(route_request("chat", ARMS), metadata=(("x-request-id", "req-7"),))
    assert exc.value.code() is grpc.StatusCode.INTERNAL
    assert "bug" in (exc.value.details() or "")
    assert "req-7" in (exc.value.details() or "")
    [line] = [e for e in logs if e["event"] == "rpc.failed"]
    assert (line["rpc"], line["request_id"], line["log_level"]) == ("Route", "req-7", "error")
    assert isinstance(line["exc_info"], RuntimeError)
    sample = daemon.metrics.registry.get_sample_value
    assert sample("banditd_rpc_failures_total", {"rpc": "Route"}) == 1
    assert sample("banditd_rpc_requests_total", {"rpc": "Route", "code": "INTERNAL"}) == 1


async def test_a_bug_in_an_admin_handler_is_internal(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last-resort answer covers the Admin service too."""

    def broken(*args: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(daemon.router, "arms", broken)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        with capture() as logs, pytest.raises(grpc.aio.AioRpcError) as exc:
            await apb_grpc.AdminStub(channel).ListArms(apb.ListArmsRequest(policy="chat"))
    assert exc.value.code() is grpc.StatusCode.INTERNAL
    assert "bug" in (exc.value.details() or "")
    assert [e["rpc"] for e in logs if e["event"] == "rpc.failed"] == ["ListArms"]
    sample = daemon.metrics.registry.get_sample_value
    assert sample("banditd_rpc_failures_total", {"rpc": "ListArms"}) == 1


def longest_value(line: dict[str, object]) -> int:
    return max(len(v) for v in line.values() if isinstance(v, str))


async def test_a_huge_policy_name_on_route_is_invalid_argument_with_a_short_message(
    stub: pb_grpc.RouterStub,
) -> None:
    """A 900 KB policy name is not echoed whole: INVALID_ARGUMENT (not RESOURCE_EXHAUSTED on
    the status metadata) with a message under 1 kB, and a log line with truncated values."""
    with capture() as logs, pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Route(route_request(HUGE, ARMS))
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len((exc.value.details() or "").encode()) < 1_100
    assert "unknown policy" in (exc.value.details() or "")
    [line] = [e for e in logs if e["event"] == "rpc.completed"]
    assert longest_value(line) < 1_100
    assert "900,000 characters]" in str(line["policy"])


async def test_a_huge_feature_name_on_route_is_shown_truncated(stub: pb_grpc.RouterStub) -> None:
    """An unknown feature's name is echoed truncated, with its length."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Route(route_request("chat", ARMS, features={HUGE: 1.0}))
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = exc.value.details() or ""
    assert "unknown feature" in details
    assert "900,000 characters]" in details
    assert len(details) < 500


async def test_a_huge_metric_name_on_feedback_is_invalid_argument_with_a_short_message(
    stub: pb_grpc.RouterStub,
) -> None:
    """A 900 KB metric name: INVALID_ARGUMENT, a message under 1 kB, a truncated log line."""
    resp = await stub.Route(route_request("chat", ARMS))
    with capture() as logs, pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Feedback(feedback_request(resp.decision_id, **{HUGE: 1.0}))
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len((exc.value.details() or "").encode()) < 1_100
    [line] = [e for e in logs if e["event"] == "rpc.completed"]
    assert longest_value(line) < 1_100
    assert "characters]" in str(line["error"])


async def test_a_huge_policy_name_on_admin_list_arms_is_invalid_argument(
    daemon: Daemon,
) -> None:
    """On the memory store too, ListArms refuses a 900 KB policy name with a short message."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await apb_grpc.AdminStub(channel).ListArms(apb.ListArmsRequest(policy=HUGE))
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = exc.value.details() or ""
    assert "policy name" in details
    assert "900,000 characters]" in details
    assert len(details.encode()) < 1_000


async def test_a_huge_decision_id_in_a_feedback_batch_is_echoed_cut(
    stub: pb_grpc.RouterStub,
) -> None:
    """A 900 KB decision id in a batch: its item is INVALID_ARGUMENT and the result echoes the
    id cut to a few hundred characters, so the answer stays small (it was ~1 MiB)."""
    batch = pb.FeedbackBatchRequest(
        items=[pb.FeedbackRequest(decision_id="chat:" + HUGE[: 900_000 - 5], reward=1.0)]
    )
    reply = await stub.FeedbackBatch(batch)
    (result,) = reply.results
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(result.decision_id) < 300
    assert reply.ByteSize() < 2_000
