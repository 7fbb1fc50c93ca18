"""Replaying a trace the daemon logged reproduces the daemon's own decisions."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import grpc
import numpy as np
import pytest

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.cli import main
from banditd.config import Settings
from banditd.server.app import build_daemon
from banditd.sim.logged import load_trace
from banditd.sim.replay import replay_trace
from banditd.sim.traces import RedactedTraceError, read_trace
from banditd.sim.tune import evaluate_logged
from tests.conftest import FakeClock
from tests.integration.conftest import daemon_settings


async def test_replaying_a_daemon_trace_reproduces_its_decisions(tmp_path, clock: FakeClock):
    """A seeded daemon logs Route/Feedback/expiry; a fresh Router replays the same choices.

    The daemon's clock is the test's: a reward is in time and an unrewarded decision expires
    because the test says so, however slowly a loaded machine runs the RPCs."""
    trace = tmp_path / "trace.jsonl"
    policy = {
        "arms": ["a", "b", "c"], "features": {"numeric": ["x1", "x2"]},
        "alpha": 0.3, "epsilon": 0.2, "reward_wait_s": 60,
    }  # fmt: skip
    settings = daemon_settings(seed=7, trace_path=str(trace), policies={"chat": policy})
    daemon = build_daemon(settings, clock=clock)  # type: ignore[arg-type]
    await daemon.start()
    rng = np.random.default_rng(3)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.RouterStub(channel)
            for i in range(120):
                x1, x2 = rng.standard_normal(2)
                resp = await stub.Route(pb.RouteRequest(
                    policy="chat",
                    context=pb.Context(features={"x1": x1, "x2": x2}),
                    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
                ))  # fmt: skip
                if i % 10 == 9:  # no feedback: settled by the expiry sweep
                    clock.advance(61)  # past the 60 s window
                    assert await daemon.sweep_once() == 1
                    continue
                clock.advance(1)  # rewarded 1 s later, well in time
                best = {"a": x1, "b": x2, "c": 0.2}[resp.arm_id]
                reward = best + 0.1 * rng.standard_normal()
                await stub.Feedback(pb.FeedbackRequest(decision_id=resp.decision_id, reward=reward))
                clock.advance(1)
    finally:
        await daemon.stop(grace_s=0)
    records = list(read_trace(trace))
    logged_arms = {r["arm"] for r in records if r["type"] == "decision"}
    assert len(logged_arms) == 3  # the run explored: decisions depend on state and rng

    report = replay_trace(trace, settings.policy_configs(), seed=7)
    assert report.decisions == 120
    assert report.reproduced, report.mismatches
    assert report.max_propensity_error == 0.0
    assert report.outcomes["applied"] == 108
    assert report.outcomes["defaulted"] == 12

    other = replay_trace(trace, settings.policy_configs(), seed=8)
    assert not other.reproduced  # another seed explores differently: the check can fail

    logged = load_trace(trace, "chat", ("a", "b", "c"))
    assert logged.n == 120
    assert logged.x.shape == (120, 2)  # the pipeline's bias entry is dropped
    np.testing.assert_array_equal(logged.reward[9::10], np.zeros(12))  # defaulted rewards
    estimates = evaluate_logged(logged, {"chat": settings.policy_configs()["chat"]})
    assert set(estimates) == {"chat", "random"}
    assert all(np.isfinite(e.value) for e in estimates["chat"].values())

    # The same through a scenario file: `banditd simulate` OPEs and re-checks the trace.
    (tmp_path / "banditd.toml").write_text(
        'seed = 7\n[policies.chat]\narms = ["a", "b", "c"]\nalpha = 0.3\nepsilon = 0.2\n'
        'reward_wait_s = 60\nfeatures = { numeric = ["x1", "x2"] }\n'
    )
    scenario = tmp_path / "from_trace.toml"
    scenario.write_text(
        'name = "from_trace"\n[env]\nkind = "trace"\npath = "trace.jsonl"\npolicy = "chat"\n'
        'arms = ["a", "b", "c"]\nconfig = "banditd.toml"\n[policies.candidate]\nalpha = 1.0\n'
    )
    assert main(["simulate", str(scenario), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "from_trace.json").read_text())
    assert summary["replay"]["same_arm"] == summary["replay"]["decisions"] == 120
    assert set(summary["estimates"]) == {"candidate", "random"}


async def _serve_and_trace(trace: Path, trace_context: str) -> Settings:
    """30 seeded Routes, each rewarded at once (no expiry, so nothing depends on timing)."""
    policy = {"arms": ["a", "b", "c"], "features": {"numeric": ["x1", "x2"]}, "epsilon": 0.2}
    settings = daemon_settings(
        seed=7, trace_path=str(trace), trace_context=trace_context, policies={"chat": policy}
    )
    daemon = build_daemon(settings)
    await daemon.start()
    rng = np.random.default_rng(3)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.RouterStub(channel)
            for _ in range(30):
                x1, x2 = rng.standard_normal(2)
                resp = await stub.Route(pb.RouteRequest(
                    policy="chat",
                    context=pb.Context(features={"x1": x1, "x2": x2}),
                    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
                ))  # fmt: skip
                reward = {"a": x1, "b": x2, "c": 0.2}[resp.arm_id]
                await stub.Feedback(pb.FeedbackRequest(decision_id=resp.decision_id, reward=reward))
    finally:
        await daemon.stop(grace_s=0)
    return settings


async def test_a_hash_or_drop_daemon_trace_is_private_and_keeps_what_it_documents(tmp_path):
    """trace_context from the settings: hash keeps OPE's rows but cannot replay; drop keeps
    arms, propensities and rewards only. Either way the file is 0600 and strict JSON."""
    traces = {mode: tmp_path / mode / "trace.jsonl" for mode in ("full", "hash", "drop")}
    for mode, trace in traces.items():
        settings = await _serve_and_trace(trace, mode)
        assert stat.S_IMODE(trace.stat().st_mode) == 0o600
        assert stat.S_IMODE(trace.parent.stat().st_mode) == 0o700
    full, hashed, dropped = (list(read_trace(t)) for t in traces.values())
    assert [r["arm"] for r in hashed] == [r["arm"] for r in full]  # same seeded decisions
    assert [r["arm"] for r in dropped] == [r["arm"] for r in full]

    decision = next(r for r in hashed if r["type"] == "decision")
    assert decision["redacted"] == "hash"
    assert decision["context"] == {"features": {"x1": None, "x2": None}, "categorical": {}}
    np.testing.assert_array_equal(
        load_trace(traces["hash"], "chat", ("a", "b", "c")).x,
        load_trace(traces["full"], "chat", ("a", "b", "c")).x,
    )
    with pytest.raises(RedactedTraceError, match="'hash'"):
        replay_trace(traces["hash"], settings.policy_configs(), seed=7)
    assert replay_trace(traces["full"], settings.policy_configs(), seed=7).reproduced

    decision = next(r for r in dropped if r["type"] == "decision")
    assert not {"context", "x", "scores"} & set(decision)
    assert [set(c) for c in decision["candidates"]] == [{"id", "cost", "expected_latency_ms"}] * 3
    assert [r.get("reward") for r in dropped] == [r.get("reward") for r in full]
    with pytest.raises(RedactedTraceError, match="no x"):
        load_trace(traces["drop"], "chat", ("a", "b", "c"))

    # `banditd simulate` on the hash trace: OPE runs, the replay says why it cannot.
    (tmp_path / "banditd.toml").write_text(
        'seed = 7\n[policies.chat]\narms = ["a", "b", "c"]\nepsilon = 0.2\n'
        'features = { numeric = ["x1", "x2"] }\n'
    )
    (tmp_path / "hashed.toml").write_text(
        'name = "hashed"\n[env]\nkind = "trace"\npath = "hash/trace.jsonl"\npolicy = "chat"\n'
        'arms = ["a", "b", "c"]\nconfig = "banditd.toml"\n[policies.candidate]\nalpha = 1.0\n'
    )
    assert main(["simulate", str(tmp_path / "hashed.toml"), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "hashed.json").read_text())
    assert "cannot be replayed" in summary["replay"]["error"]
    assert set(summary["estimates"]) == {"candidate", "random"}
