"""banditd.client over real gRPC on loopback: typed results and Admin calls against the daemon
(in process, port 0), metadata and the retry policy against a scripted Router on port 0 that
records what each call carried and answers UNAVAILABLE when told to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import structlog

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.client import (
    AdminClient,
    ArmScore,
    AsyncAdminClient,
    AsyncClient,
    Client,
    Decision,
    FeedbackResult,
    FeedbackStatus,
    PolicyInfo,
    RetryPolicy,
)
from banditd.server.app import Daemon, build_daemon
from tests.integration.traffic import redis_daemon_settings

ARMS = ["a", "b", "c"]
TOKEN = "t0ken-for-the-scripted-router"


# -- against the daemon ---------------------------------------------------------------------------
async def test_route_and_feedback_return_typed_results(daemon: Daemon) -> None:
    """A Decision with one ArmScore per candidate, a FeedbackResult whose status is an enum
    member that prints by name; the protobuf message stays in `raw`."""
    async with AsyncClient(f"127.0.0.1:{daemon.port}") as client:
        d = await client.route("chat", ARMS, features={"x1": 0.2})
        applied = await client.feedback(d.decision_id, reward=1.0)
        again = await client.feedback(d.decision_id, reward=0.0)
    assert isinstance(d, Decision)
    assert d.arm_id in ARMS
    assert [s.arm_id for s in d.scores] == ARMS
    assert all(isinstance(s, ArmScore) for s in d.scores)
    assert sum(s.propensity for s in d.scores) == pytest.approx(1.0)
    assert (d.algorithm, d.degraded, d.paging) == ("linucb", False, None)
    assert isinstance(d.raw, pb.RouteResponse)
    assert d.raw.decision_id == d.decision_id
    assert "raw=" not in repr(d)

    assert isinstance(applied, FeedbackResult)
    assert (applied.status, applied.arm_id, applied.reward) == (
        FeedbackStatus.APPLIED, d.arm_id, 1.0,
    )  # fmt: skip
    assert str(applied.status) == f"{applied.status}" == "FeedbackStatus.APPLIED"
    assert "status=<FeedbackStatus.APPLIED: 1>" in repr(applied)
    assert again.status is FeedbackStatus.DUPLICATE
    assert again.reward == 1.0  # the first, applied reward


async def test_blocking_client_returns_the_same_types(daemon: Daemon) -> None:
    """Client (the blocking one, run off the loop that serves the daemon) gives the same types,
    and a FeedbackBatch gives one typed result per item with a grpc.StatusCode."""

    def use() -> tuple[Decision, list[Any]]:
        with Client(f"127.0.0.1:{daemon.port}") as client:
            d = client.route("chat", ARMS)
            return d, client.feedback_batch({d.decision_id: 0.5, "chat:0000": 1.0})

    d, results = await asyncio.to_thread(use)
    assert d.arm_id in ARMS
    assert [r.code for r in results] == [grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND]
    assert results[0].ok
    assert results[0].result is not None
    assert results[0].result.status is FeedbackStatus.APPLIED
    assert results[1].result is None
    assert "unknown" in results[1].error


async def test_call_metadata_reaches_the_daemon(daemon: Daemon) -> None:
    """A call's x-request-id is the request id of the daemon's canonical log line."""
    async with AsyncClient(f"127.0.0.1:{daemon.port}", metadata={"x-tenant": "acme"}) as client:
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            await client.route("chat", ARMS, metadata={"x-request-id": "req-77"})
    (line,) = [e for e in logs if e["event"] == "rpc.completed"]
    assert (line["rpc"], line["request_id"]) == ("Route", "req-77")


async def test_admin_client_covers_the_admin_service(daemon: Daemon) -> None:
    """Policies, arms (add, remove, what was learned), segments, reset; export on the memory
    store is refused with the daemon's status. (Admin is on the Route port in this config.)"""
    target = f"127.0.0.1:{daemon.port}"
    async with AsyncClient(target) as client, AsyncAdminClient(target) as admin:
        d = await client.route("chat", ARMS, segment="eu")
        await client.feedback(d.decision_id, reward=1.0)
        assert await admin.list_policies() == (PolicyInfo("chat", declared=True, stored=True),)
        arms = await admin.list_arms("chat")
        assert (arms.policy, arms.arms) == ("chat", tuple(ARMS))
        assert [(a.segment, a.arm_id, a.pulls) for a in arms.learned if a.pulls] == [
            ("eu", d.arm_id, 1)
        ]
        assert (await admin.add_arm("chat", "d")).arms == (*ARMS, "d")
        routed_d = await client.route("chat", ["d"])  # segment "": a second model
        assert routed_d.arm_id == "d"
        await client.feedback(routed_d.decision_id, reward=0.0)
        assert (await admin.remove_arm("chat", "a")).arms == ("b", "c", "d")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await client.route("chat", ["a"])
        assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        segments = await admin.list_segments("chat")
        assert "eu" in [s.segment for s in segments.segments]
        assert segments.total == len(segments.segments)
        assert await admin.delete_segment("chat", "eu") is True
        assert await admin.delete_segment("chat", "eu") is False
        assert await admin.reset_policy("chat") == 1  # the "" segment's model
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await admin.export_policy("chat")
        assert exc.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    def blocking() -> tuple[str, ...]:
        with AdminClient(target) as sync_admin:
            return sync_admin.list_arms("chat").arms

    assert await asyncio.to_thread(blocking) == ("b", "c", "d")


async def test_admin_export_reset_import_round_trip_on_redis(redis_url: str) -> None:
    """On the Redis store: export a learned policy, reset it, import the export back."""
    r = aioredis.from_url(redis_url)
    await r.flushdb()
    await r.aclose()
    daemon = build_daemon(redis_daemon_settings(redis_url))
    await daemon.start()
    target = f"127.0.0.1:{daemon.port}"
    try:
        async with AsyncClient(target) as client, AsyncAdminClient(target) as admin:
            for _ in range(3):
                d = await client.route("chat", ARMS, features={"x1": 0.5})
                assert (await client.feedback(d.decision_id, reward=1.0)).status.name == "APPLIED"
            state = await admin.export_policy("chat")
            assert isinstance(state, apb.PolicyState)
            assert sum(a.n for a in state.arms) == 3
            assert await admin.reset_policy("chat") == 1
            assert sum(a.pulls for a in (await admin.list_arms("chat")).learned) == 0
            assert await admin.import_policy(state, replace=True) == len(state.arms)
            assert sum(a.pulls for a in (await admin.list_arms("chat")).learned) == 3
    finally:
        await daemon.stop(grace_s=0)


# -- against a scripted Router: metadata and retries ----------------------------------------------
class ScriptedRouter(pb_grpc.RouterServicer):
    """Records each call's method and metadata; the first `unavailable[method]` calls of a
    method are answered UNAVAILABLE (what the daemon says when its store cannot take an update),
    the rest with a fixed response."""

    def __init__(self, unavailable: dict[str, int]) -> None:
        self.unavailable = dict(unavailable)
        self.calls: list[tuple[str, tuple[tuple[str, str | bytes], ...]]] = []

    async def _answer(self, method: str, context: grpc.aio.ServicerContext, response: Any) -> Any:
        self.calls.append((method, tuple(context.invocation_metadata() or ())))
        if self.unavailable.get(method, 0) > 0:
            self.unavailable[method] -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the store is busy")
        return response

    async def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:
        response = pb.RouteResponse(decision_id="chat:01", arm_id=request.candidates[0].id)
        return await self._answer("Route", context, response)

    async def Feedback(self, request: pb.FeedbackRequest, context: Any) -> pb.FeedbackResponse:
        response = pb.FeedbackResponse(status=pb.FEEDBACK_STATUS_APPLIED, reward=request.reward)
        return await self._answer("Feedback", context, response)

    async def FeedbackBatch(self, request: Any, context: Any) -> pb.FeedbackBatchResponse:
        results = [pb.FeedbackBatchResult(decision_id=i.decision_id) for i in request.items]
        return await self._answer(
            "FeedbackBatch", context, pb.FeedbackBatchResponse(results=results)
        )

    def attempts(self, method: str) -> list[dict[str, str | bytes]]:
        """The metadata of each attempt of `method`, as dicts."""
        return [dict(md) for m, md in self.calls if m == method]


Scripted = tuple[ScriptedRouter, str]


@pytest.fixture
async def scripted(request: pytest.FixtureRequest) -> AsyncIterator[Scripted]:
    """A ScriptedRouter on a free loopback port; parametrize indirectly with `unavailable`."""
    router = ScriptedRouter(getattr(request, "param", {}))
    server = grpc.aio.server()
    pb_grpc.add_RouterServicer_to_server(router, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield router, f"127.0.0.1:{port}"
    await server.stop(grace=None)


FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.mark.parametrize("scripted", [{"Feedback": 1, "FeedbackBatch": 1}], indirect=True)
async def test_feedback_is_retried_on_unavailable(scripted: Scripted) -> None:
    """One UNAVAILABLE, then OK: the call succeeds on its second attempt, which grpc marks as
    a retry (grpc-previous-rpc-attempts)."""
    router, target = scripted
    async with AsyncClient(target, retry=FAST) as client:
        result = await client.feedback("chat:01", reward=0.5)
        (item,) = await client.feedback_batch({"chat:02": 1.0})
    assert (result.status, result.reward) == (FeedbackStatus.APPLIED, 0.5)
    assert item.decision_id == "chat:02"
    for method in ("Feedback", "FeedbackBatch"):
        attempts = router.attempts(method)
        assert len(attempts) == 2, method
        assert attempts[1].get("grpc-previous-rpc-attempts") == "1"


@pytest.mark.parametrize("scripted", [{"Route": 1}], indirect=True)
async def test_route_is_never_retried(scripted: Scripted) -> None:
    """A repeated Route would be a second decision: UNAVAILABLE reaches the caller, after one
    attempt, even with a retry policy that would allow more."""
    router, target = scripted
    async with AsyncClient(target, retry=FAST) as client:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await client.route("chat", ["a"])
    assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
    assert len(router.attempts("Route")) == 1


@pytest.mark.parametrize("scripted", [{"Feedback": 5}], indirect=True)
async def test_retries_stop_at_max_attempts_and_retry_none_turns_them_off(
    scripted: Scripted,
) -> None:
    """Still UNAVAILABLE after max_attempts: the caller gets it; retry=None: after one attempt."""
    router, target = scripted
    async with AsyncClient(target, retry=FAST) as client:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await client.feedback("chat:01", reward=1.0)
    assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
    assert len(router.attempts("Feedback")) == FAST.max_attempts
    async with AsyncClient(target, retry=None) as client:
        with pytest.raises(grpc.aio.AioRpcError):
            await client.feedback("chat:01", reward=1.0)
    assert len(router.attempts("Feedback")) == FAST.max_attempts + 1


@pytest.mark.parametrize("scripted", [{"Feedback": 1}], indirect=True)
async def test_blocking_client_retries_too(scripted: Scripted) -> None:
    """The blocking channel gets the same service config (default policy, not the test's)."""
    router, target = scripted

    def feedback() -> FeedbackResult:
        with Client(target) as client:
            return client.feedback("chat:01", reward=1.0)

    assert (await asyncio.to_thread(feedback)).status is FeedbackStatus.APPLIED
    assert len(router.attempts("Feedback")) == 2


async def test_client_and_call_metadata_arrive_with_the_token(scripted: Scripted) -> None:
    """Every call carries the bearer token and the client's pairs; a call adds its own after
    them (str values, bytes for -bin keys)."""
    router, target = scripted
    async with AsyncClient(
        target, token=TOKEN, metadata=[("x-tenant", "acme"), ("x-trace-bin", b"\x00\xff")]
    ) as client:
        await client.route("chat", ["a"], metadata={"x-request-id": "req-1"})
        await client.feedback("chat:01", reward=1.0)
    route_md, feedback_md = router.calls[0][1], router.calls[1][1]
    ours = [(k, v) for k, v in route_md if not k.startswith(("grpc-", "user-agent"))]
    assert ours == [
        ("authorization", f"Bearer {TOKEN}"),
        ("x-tenant", "acme"),
        ("x-trace-bin", b"\x00\xff"),
        ("x-request-id", "req-1"),
    ]
    assert "x-request-id" not in dict(feedback_md)  # per call only
    assert dict(feedback_md)["x-tenant"] == "acme"
