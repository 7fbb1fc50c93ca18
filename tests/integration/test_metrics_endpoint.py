"""/metrics served the way `serve` serves it (start_metrics), on a free port, scraped over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.server.app import Daemon, build_daemon, start_metrics
from tests.integration.conftest import daemon_settings


@pytest.fixture
async def scraped() -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon with /metrics on 127.0.0.1:0; (daemon, the /metrics URL)."""
    settings = daemon_settings()
    server = {**settings.server.model_dump(), "metrics_listen": "127.0.0.1:0"}
    settings = daemon_settings(server=server)
    daemon = build_daemon(settings)
    http = start_metrics(settings, daemon.metrics)
    assert http is not None
    await daemon.start()
    yield daemon, f"http://127.0.0.1:{http.server_port}/metrics"
    await daemon.stop(grace_s=0)
    http.shutdown()
    http.server_close()


async def scrape(url: str) -> dict[str, float]:
    """One scrape, as Prometheus would: every sample's name (labels dropped) and value."""
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def test_process_metrics_are_exported(scraped: tuple[Daemon, str]) -> None:
    """process_* (memory, CPU, fds) and python_gc_* are on /metrics, with this process's values."""
    daemon, url = scraped
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        await pb_grpc.RouterStub(channel).Route(pb.RouteRequest(
            policy="chat", context=pb.Context(features={"x1": 0.1, "x2": 0.2}),
            candidates=[pb.Candidate(id="a")],
        ))  # fmt: skip
    samples = await scrape(url)
    assert samples["process_resident_memory_bytes"] > 10 * 2**20
    assert samples["process_cpu_seconds_total"] > 0
    assert 3 <= samples["process_open_fds"] <= samples["process_max_fds"]
    assert "python_gc_collections_total" in samples
    assert samples["banditd_decisions_total"] == 1  # the daemon's own series on the same page
