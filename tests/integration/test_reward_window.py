"""Finding 8 of the robustness issue: a window too short for the rewards is not silent.

Rewards 1,000 s late with the default reward_wait_s = 600: every decision was settled with
the default reward, the policy learned nothing, and nothing warned. Now each late reward is
counted per policy, and the daemon logs feedback.late_rewards and feedback.window_too_short
with the window a policy would need.
"""

from __future__ import annotations

import grpc
import pytest
import structlog

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import build_daemon
from tests.conftest import FakeClock
from tests.integration.conftest import daemon_settings

ROUTE = pb.RouteRequest(
    policy="chat",
    context=pb.Context(features={"x1": 0.5}),
    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
)


async def test_rewards_after_the_window_are_counted_and_warned_about(clock: FakeClock) -> None:
    """200 rewards 1,000 s late: all refused as expired, counted, and two warnings name the
    policy, how late they were and a window that would take them (1,020 s, rounded up)."""
    settings = daemon_settings(
        policies={"chat": {"arms": ["a", "b", "c"], "features": {"numeric": ["x1", "x2"]}}}
    )
    daemon = build_daemon(settings, clock=clock)
    await daemon.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.RouterStub(channel)
            ids = [(await stub.Route(ROUTE)).decision_id for _ in range(200)]
            clock.advance(601)
            await daemon.sweep_once()  # the window closed: the default reward is learned
            clock.advance(399)
            with structlog.testing.capture_logs() as logs:
                for decision_id in ids:
                    with pytest.raises(grpc.aio.AioRpcError) as exc:
                        await stub.Feedback(pb.FeedbackRequest(decision_id=decision_id, reward=1))
                    assert exc.value.code() is grpc.StatusCode.NOT_FOUND
                    assert "expired" in (exc.value.details() or "")
                await daemon.sweep_once()
                await daemon.sweep_once()  # rate-limited: no second pair of lines
    finally:
        await daemon.stop(grace_s=0)
    warnings = [e for e in logs if e["event"].startswith("feedback.") and e["policy"] == "chat"]
    assert [w["event"] for w in warnings] == [
        "feedback.late_rewards", "feedback.window_too_short"
    ]  # fmt: skip
    late, short = warnings
    assert late["late"] == 200
    assert late["reward_wait_s"] == 600
    assert 399 <= late["max_late_by_s"] <= 400
    assert short["expired_share"] == 1.0
    assert "reward_wait_s to at least 1020 s" in short["hint"]
    registry = daemon.metrics.registry
    assert registry.get_sample_value("banditd_rewards_late_total", {"policy": "chat"}) == 200
    assert registry.get_sample_value("banditd_decisions_expired_total", {"policy": "chat"}) == 200


async def test_rewards_in_time_raise_no_warning(clock: FakeClock) -> None:
    """Rewards within the window: no late count, no warning line."""
    daemon = build_daemon(daemon_settings(), clock=clock)
    await daemon.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.RouterStub(channel)
            with structlog.testing.capture_logs() as logs:
                for _ in range(50):
                    d = await stub.Route(ROUTE)
                    clock.advance(30)
                    await stub.Feedback(pb.FeedbackRequest(decision_id=d.decision_id, reward=1))
                await daemon.sweep_once()
    finally:
        await daemon.stop(grace_s=0)
    assert not [e for e in logs if e["event"].startswith("feedback.") and "late" in e]
    registry = daemon.metrics.registry
    assert registry.get_sample_value("banditd_rewards_late_total", {"policy": "chat"}) is None
