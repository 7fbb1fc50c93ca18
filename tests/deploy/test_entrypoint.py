"""Run the daemon exactly as the container does and probe it like Kubernetes and Prometheus would.

The command is the Dockerfile's ENTRYPOINT resolved through pyproject's console script; the
environment is the image's ENV plus the pod's env; the config is the rendered ConfigMap. Only
the listen ports (free loopback ports) and the Redis URL (a throwaway redis-server) differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tomllib
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import banditd
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import StoreSettings
from banditd.server.app import SERVICE_NAME
from banditd.server.health_status import LEARNING, LIVENESS, READINESS
from tests.deploy.conftest import ROOT, find, parse_dockerfile, render, sidecar
from tests.integration.conftest import free_port, start_redis

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STARTUP_TIMEOUT_S = 60.0


def _final_stage() -> list[Any]:
    ins = parse_dockerfile(ROOT / "Dockerfile")
    return ins[max(i for i, x in enumerate(ins) if x.keyword == "FROM") :]


def entrypoint_argv() -> list[str]:
    """ENTRYPOINT ["banditd", ...] as this Python runs the `banditd` console script."""
    (entry,) = [x.exec_form() for x in _final_stage() if x.keyword == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts[entry[0]].partition(":")
    shim = (
        f"import sys; from {module} import {func}; sys.argv[0] = {entry[0]!r}; sys.exit({func}())"
    )
    return [sys.executable, "-c", shim, *entry[1:]]


def healthcheck_argv() -> list[str]:
    """The Dockerfile's HEALTHCHECK command, with `python` being this interpreter."""
    (check,) = [x for x in _final_stage() if x.keyword == "HEALTHCHECK"]
    argv = type(check)("CMD", check.value.partition("CMD ")[2]).exec_form()
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for x in _final_stage():
        if x.keyword == "ENV":
            for pair in x.exec_form():
                name, _, value = pair.partition("=")
                if name.startswith(("BANDITD_", "PYTHON")):
                    env[name] = value
    return env


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    grpc_address: str
    metrics_url: str
    log_path: Path
    trace_path: Path
    grace_s: float
    env: dict[str, str]
    config: dict[str, Any]

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


async def _wait_serving(running: Running) -> None:
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
    async with grpc.aio.insecure_channel(running.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while asyncio.get_running_loop().time() < deadline:
            if running.proc.returncode is not None:
                break
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == SERVING:
                    return
            await asyncio.sleep(0.1)
    log = running.log_path.read_text(encoding="utf-8")
    pytest.fail(f"daemon not SERVING (exit code {running.proc.returncode}); log:\n{log}")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    """The entrypoint in a subprocess, configured from the rendered prod overlay."""
    docs = render("prod")
    configmap = find(docs, "ConfigMap")
    container = sidecar(docs)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_dir = tmp_path / "etc-banditd"  # stands in for the ConfigMap volume
    config_dir.mkdir()
    for name, text in configmap["data"].items():
        (config_dir / name).write_text(text, encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITD_")}
    env |= _image_env()
    env |= {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["BANDITD_CONFIG"] = env["BANDITD_CONFIG"].replace(mounts["banditd-config"], str(config_dir))
    grpc_port, metrics_port = free_port(), free_port()
    trace_path = tmp_path / "trace.jsonl"
    env |= {
        "BANDITD_SERVER__LISTEN": f"127.0.0.1:{grpc_port}",
        "BANDITD_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "BANDITD_TRACE_PATH": str(trace_path),
        "PYTHONPATH": str(ROOT),
    }
    redis = None
    if "redis" in StoreSettings.model_fields:  # the pod's secretKeyRef, served by a real Redis
        redis, redis_port = start_redis(tmp_path)
        env["BANDITD_STORE__REDIS__URL"] = f"redis://127.0.0.1:{redis_port}/0"
    else:  # the Redis store has not landed on this branch yet: the ConfigMap's backend waits
        env["BANDITD_STORE__BACKEND"] = "memory"

    config = tomllib.loads((config_dir / "banditd.toml").read_text(encoding="utf-8"))
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *entrypoint_argv(),
            *container.get("args", []),
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=log_file,
        )
    run = Running(
        proc, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{metrics_port}/metrics",
        log_path, trace_path, float(config["server"]["grace_s"]), env, config,
    )  # fmt: skip
    try:
        await _wait_serving(run)
        yield run
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)


def _route_request(config: dict[str, Any]) -> pb.RouteRequest:
    policy = config["policies"]["chat"]
    features = {}
    for f in policy["features"]["numeric"]:
        features[f if isinstance(f, str) else f["name"]] = 1.0
    return pb.RouteRequest(
        policy="chat",
        context=pb.Context(features=features),
        candidates=[pb.Candidate(id=arm) for arm in policy["arms"]],
    )


Samples = dict[str, list[tuple[dict[str, str], float]]]


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    matches = [v for ls, v in samples.get(name, []) if labels.items() <= ls.items()]
    assert len(matches) == 1, f"{name}{labels}: {samples.get(name)}"
    return matches[0]


async def test_entrypoint_is_healthy_and_exports_metrics(running: Running) -> None:
    """grpc.health.v1 says SERVING, the HEALTHCHECK passes, /metrics has every key series."""
    async with grpc.aio.insecure_channel(running.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in (LIVENESS, READINESS, LEARNING):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == SERVING, service
        router = pb_grpc.RouterStub(channel)
        decision = await router.Route(_route_request(running.config))
        await router.Feedback(pb.FeedbackRequest(decision_id=decision.decision_id, reward=1.0))
        await router.Route(_route_request(running.config))  # sees the updated model version

    check = await asyncio.create_subprocess_exec(
        *healthcheck_argv(), env=running.env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await check.communicate()
    assert check.returncode == 0, out
    assert b"SERVING" in out

    samples = await asyncio.to_thread(_scrape, running.metrics_url)
    for rpc, calls in (("Route", 2), ("Feedback", 1)):
        assert _value(samples, "banditd_rpc_requests_total", rpc=rpc, code="OK") == calls
        assert _value(samples, "banditd_rpc_latency_seconds_count", rpc=rpc, code="OK") == calls
    assert _value(samples, "banditd_feedback_outcomes_total", outcome="applied") == 1
    assert _value(samples, "banditd_decisions_total", policy="chat") == 2
    assert _value(samples, "banditd_model_version", policy="chat") >= 1
    assert _value(samples, "banditd_serving") == 1
    assert _value(samples, "banditd_degraded") == 0
    assert _value(samples, "banditd_store_up") == 1
    assert _value(samples, "banditd_last_settle_timestamp_seconds") > 0  # the Feedback
    for name in (
        "banditd_pending_decisions", "banditd_store_errors_total",
        "banditd_adapter_cache_hits_total", "banditd_adapter_cache_misses_total",
        "banditd_adapter_cache_loads_total", "banditd_adapter_cache_evictions_total",
        "banditd_feature_cache_hits_total", "banditd_feature_cache_misses_total",
    ):  # fmt: skip
        assert name in samples, name
    assert _value(samples, "banditd_build_info", version=banditd.__version__) == 1


async def test_sigterm_turns_readiness_off_then_drains_and_exits_zero(running: Running) -> None:
    """SIGTERM: Watch sees NOT_SERVING, health-following RPCs all succeed, exit 0, trace kept."""
    ok: list[str] = []
    failed: list[grpc.StatusCode] = []
    started, not_serving = asyncio.Event(), asyncio.Event()

    async def traffic(router: pb_grpc.RouterStub) -> None:
        """A client that follows gRPC health: no new RPC once it has seen NOT_SERVING."""
        for _ in range(5000):  # bounded
            if not_serving.is_set():
                return
            try:
                reply = await router.Route(_route_request(running.config), timeout=10)
            except grpc.aio.AioRpcError as exc:
                failed.append(exc.code())
                return
            ok.append(reply.decision_id)
            if len(ok) >= 20:
                started.set()

    server = running.config["server"]
    budget_s = server.get("drain_delay_s", 0) + running.grace_s + 10
    async with grpc.aio.insecure_channel(running.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert (await watch.read()).status == SERVING
        router = pb_grpc.RouterStub(channel)
        workers = [asyncio.create_task(traffic(router)) for _ in range(4)]
        await asyncio.wait_for(started.wait(), timeout=30)

        running.proc.send_signal(signal.SIGTERM)
        update = await asyncio.wait_for(watch.read(), timeout=10)
        assert update.status == NOT_SERVING  # readiness off while the server still answers
        not_serving.set()
        watch.cancel()  # a Watch never ends by itself; let the drain finish
        await asyncio.wait_for(asyncio.gather(*workers), timeout=budget_s)
        assert await asyncio.wait_for(running.proc.wait(), timeout=budget_s) == 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await router.Route(_route_request(running.config), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

    assert failed == []
    events = [e["event"] for e in running.events()]
    order = [events.index(e) for e in ("server.stopping", "server.drained", "server.stopped")]
    assert order == sorted(order), events[-10:]
    assert not [e for e in running.events() if e.get("level") in {"error", "critical"}]
    traced = [json.loads(line) for line in running.trace_path.read_text().splitlines()]
    decisions = {r["decision_id"] for r in traced if r["type"] == "decision"}
    assert set(ok) <= decisions  # every answered Route reached the trace file
