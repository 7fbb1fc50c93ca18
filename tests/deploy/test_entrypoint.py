"""Run the daemon exactly as the container does and probe it like Kubernetes and Prometheus would.

The command is the Dockerfile's ENTRYPOINT resolved through pyproject's console script; the
environment is the image's ENV plus the pod's env; the config is the rendered prod ConfigMap,
with mTLS on. Only the listen ports (free loopback ports), the Redis URL (a throwaway
redis-server) and the certificates differ: a test CA issues what cert-manager would put in the
Secret banditd-tls, for the Certificate's names, and the mount paths point at a temporary
directory. Clients talk as the pod's containers do: the kubelet in plaintext to the health port,
the serving container over mTLS with banditd.client and its BANDITD_TLS_* settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
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
from banditd.client import AsyncClient, FeedbackStatus
from banditd.config import StoreSettings
from banditd.server.app import SERVICE_NAME
from banditd.server.health_status import LEARNING, LIVENESS, READINESS
from banditd.sim.traces import read_trace
from tests.deploy.conftest import (
    ROOT,
    find,
    free_listeners,
    parse_dockerfile,
    render,
    sidecar,
)
from tests.deploy.pki import KeyPair, issue, make_ca
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
    grpc_address: str  # server.listen: mTLS
    health_address: str  # server.health_listen: plaintext grpc.health.v1, what the kubelet probes
    metrics_url: str
    log_path: Path
    trace_path: Path
    grace_s: float
    env: dict[str, str]
    config: dict[str, Any]
    ca: KeyPair  # the test CA standing in for the ClusterIssuer banditd-ca
    gateway_tls: dict[str, str]  # the serving container's BANDITD_TLS_* as client options

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def gateway(self, timeout_s: float = 10.0) -> AsyncClient:
        """banditd.client as the serving container makes it: mTLS with the pod's certificate."""
        t = self.gateway_tls
        return AsyncClient(
            self.grpc_address, timeout_s, tls_ca_file=t["tls_ca_file"],
            tls_cert_file=t["tls_cert_file"], tls_key_file=t["tls_key_file"],
            tls_server_name=t["tls_server_name"],
        )  # fmt: skip


async def _wait_serving(running: Running) -> None:
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
    async with grpc.aio.insecure_channel(running.health_address) as channel:
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
    serving = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["spec"]["containers"][0]
    serving_env = {e["name"]: e["value"] for e in serving["env"] if "value" in e}

    # The Secret banditd-tls as cert-manager's CA issuer writes it for the Certificate.
    certificate = find(docs, "Certificate", "banditd-tls")["spec"]
    ca = make_ca(tmp_path / "ca")
    tls_dir = tmp_path / "etc-banditd-tls"  # stands in for the Secret volume
    issue(ca, tls_dir, dns_names=certificate["dnsNames"], uris=certificate["uris"])
    shutil.copy(ca.cert, tls_dir / "ca.crt")

    def local(path: str) -> str:  # a path under the Secret mount, in either container
        return path.replace(mounts["banditd-tls"], str(tls_dir))

    config_dir = tmp_path / "etc-banditd"  # stands in for the ConfigMap volume
    config_dir.mkdir()
    for name, text in configmap["data"].items():
        (config_dir / name).write_text(local(text), encoding="utf-8")
    gateway_tls = {
        "tls_ca_file": local(serving_env["BANDITD_TLS_CA_FILE"]),
        "tls_cert_file": local(serving_env["BANDITD_TLS_CERT_FILE"]),
        "tls_key_file": local(serving_env["BANDITD_TLS_KEY_FILE"]),
        "tls_server_name": serving_env["BANDITD_TLS_SERVER_NAME"],
    }
    assert serving_env["BANDITD_ADDRESS"].startswith("127.0.0.1:")  # pod-local, by IP

    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITD_")}
    env |= _image_env()
    env |= {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["BANDITD_CONFIG"] = env["BANDITD_CONFIG"].replace(mounts["banditd-config"], str(config_dir))
    trace_path = tmp_path / "trace.jsonl"
    env |= free_listeners(free_port)
    env |= {"BANDITD_TRACE_PATH": str(trace_path), "PYTHONPATH": str(ROOT)}
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
    grpc_address = env["BANDITD_SERVER__LISTEN"]
    run = Running(
        proc, grpc_address, env.get("BANDITD_SERVER__HEALTH_LISTEN", grpc_address),
        f"http://{env['BANDITD_SERVER__METRICS_LISTEN']}/metrics", log_path, trace_path,
        float(config["server"]["grace_s"]), env, config, ca, gateway_tls,
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


def _features(config: dict[str, Any]) -> dict[str, float]:
    numeric = config["policies"]["chat"]["features"]["numeric"]
    return {f if isinstance(f, str) else f["name"]: 1.0 for f in numeric}


async def _route(client: AsyncClient, config: dict[str, Any]) -> str:
    """A Route for the shipped policy "chat" over all its arms; the decision id."""
    arms = config["policies"]["chat"]["arms"]
    return (await client.route("chat", arms, features=_features(config))).decision_id


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
    """grpc.health.v1 on the health port says SERVING, the HEALTHCHECK passes, the serving
    container routes and reports over mTLS, /metrics has every key series."""
    async with grpc.aio.insecure_channel(running.health_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in (LIVENESS, READINESS, LEARNING):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == SERVING, service
    async with running.gateway() as gateway:
        decision_id = await _route(gateway, running.config)
        await gateway.feedback(decision_id, reward=1.0)
        await _route(gateway, running.config)  # sees the updated model version

    # The image's HEALTHCHECK. Its default address is server.listen, which the image's own config
    # (deploy/base) serves in plaintext; under the prod ConfigMap that port speaks mTLS, so point
    # it at the health port as the kubelet's probes do.
    check = await asyncio.create_subprocess_exec(
        *healthcheck_argv(), "--address", running.health_address, env=running.env,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
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


async def test_only_known_callers_get_through_mtls(running: Running, tmp_path: Path) -> None:
    """The prod config's trust boundary, as shipped: no plaintext and no anonymous TLS on the gRPC
    port, nothing signed by another CA; the reward pipeline (its own certificate from the same
    issuer, with the SPIFFE ID its caller names) may send Feedback but not Route."""
    callers = {c["name"]: c for c in running.config["auth"]["callers"]}
    ca_file = running.gateway_tls["tls_ca_file"]
    name = running.gateway_tls["tls_server_name"]

    def caller(cert: KeyPair | None) -> AsyncClient:
        return AsyncClient(
            running.grpc_address, 5, tls_ca_file=ca_file, tls_server_name=name,
            tls_cert_file=cert.cert if cert else None, tls_key_file=cert.key if cert else None,
        )  # fmt: skip

    async def route_refused(client: AsyncClient) -> grpc.StatusCode:
        async with client:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await _route(client, running.config)
        return exc.value.code()

    async with running.gateway() as gateway:
        decision_id = await _route(gateway, running.config)

    plaintext = AsyncClient(running.grpc_address, 5)
    assert await route_refused(plaintext) is grpc.StatusCode.UNAVAILABLE
    assert await route_refused(caller(None)) is grpc.StatusCode.UNAVAILABLE  # no certificate
    gateway_id = callers["gateway"]["identities"]
    stranger = issue(make_ca(tmp_path / "other-ca"), tmp_path / "stranger", uris=gateway_id)
    assert await route_refused(caller(stranger)) is grpc.StatusCode.UNAVAILABLE  # wrong CA

    pipeline_id = callers["reward-pipeline"]["identities"]
    async with caller(issue(running.ca, tmp_path / "pipeline", uris=pipeline_id)) as pipeline:
        applied = await pipeline.feedback(decision_id, reward=0.5)
        assert applied.status is FeedbackStatus.APPLIED
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await _route(pipeline, running.config)
        assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_sigterm_turns_readiness_off_then_drains_and_exits_zero(running: Running) -> None:
    """SIGTERM: Watch sees NOT_SERVING, health-following RPCs all succeed, exit 0, trace kept."""
    ok: list[str] = []
    failed: list[grpc.StatusCode] = []
    started, not_serving = asyncio.Event(), asyncio.Event()

    async def traffic(gateway: AsyncClient) -> None:
        """A client that follows gRPC health: no new RPC once it has seen NOT_SERVING."""
        for _ in range(5000):  # bounded
            if not_serving.is_set():
                return
            try:
                decision_id = await _route(gateway, running.config)
            except grpc.aio.AioRpcError as exc:
                failed.append(exc.code())
                return
            ok.append(decision_id)
            if len(ok) >= 20:
                started.set()

    server = running.config["server"]
    budget_s = server.get("drain_delay_s", 0) + running.grace_s + 10
    async with (
        grpc.aio.insecure_channel(running.health_address) as channel,
        running.gateway() as gateway,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert (await watch.read()).status == SERVING
        workers = [asyncio.create_task(traffic(gateway)) for _ in range(4)]
        await asyncio.wait_for(started.wait(), timeout=30)

        running.proc.send_signal(signal.SIGTERM)
        update = await asyncio.wait_for(watch.read(), timeout=10)
        assert update.status == NOT_SERVING  # readiness off while the server still answers
        not_serving.set()
        watch.cancel()  # a Watch never ends by itself; let the drain finish
        await asyncio.wait_for(asyncio.gather(*workers), timeout=budget_s)
        assert await asyncio.wait_for(running.proc.wait(), timeout=budget_s) == 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _route(gateway, running.config)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

    assert failed == []
    events = [e["event"] for e in running.events()]
    order = [events.index(e) for e in ("server.stopping", "server.drained", "server.stopped")]
    assert order == sorted(order), events[-10:]
    assert not [e for e in running.events() if e.get("level") in {"error", "critical"}]
    # The shipped workers = "auto" runs a worker per CPU here (no pod limits outside the pod):
    # read_trace reads their files (<trace_path>.w<i>) as one trace, or the one file.
    traced = list(read_trace(running.trace_path))
    decisions = {r["decision_id"] for r in traced if r["type"] == "decision"}
    assert set(ok) <= decisions  # every answered Route reached the trace file
