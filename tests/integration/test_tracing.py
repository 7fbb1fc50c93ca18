"""OpenTelemetry traces ([tracing]): spans in the caller's trace, over real gRPC on loopback.

The daemon is built by `build_daemon` as `serve` builds it; the tests hand it an in-memory span
exporter, which takes the place of OTLP behind the same BatchSpanProcessor. One test exports
over real OTLP/gRPC to a collector stand-in.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import Settings, TracingSettings
from banditd.server.app import Daemon, build_daemon
from tests.integration.conftest import daemon_settings

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"  # the W3C spec's example ids
PARENT_ID = "00f067aa0ba902b7"
UNKNOWN_ID = "chat:" + "0" * 24  # well formed, never issued
ROUTE = pb.RouteRequest(
    policy="chat", segment="eu",
    context=pb.Context(features={"x1": 0.5, "x2": -1.0}),
    candidates=[pb.Candidate(id=a) for a in ("a", "b", "c")],
)  # fmt: skip


def traceparent(trace_id: str = TRACE_ID, parent_id: str = PARENT_ID, flags: str = "01") -> str:
    return f"00-{trace_id}-{parent_id}-{flags}"


def traced_settings(**overrides: object) -> Settings:
    return daemon_settings(tracing={"enabled": True, "sample_ratio": 1.0}, **overrides)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def _started(settings: Settings, exporter: InMemorySpanExporter) -> Daemon:
    daemon = build_daemon(settings, span_exporter=exporter)
    await daemon.start()
    return daemon


@pytest.fixture
async def stub(exporter: InMemorySpanExporter) -> AsyncIterator[tuple[Daemon, Any]]:
    daemon = await _started(traced_settings(), exporter)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield daemon, pb_grpc.RouterStub(channel)
    await daemon.stop(grace_s=0)


def finished(daemon: Daemon, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The spans exported so far (the BatchSpanProcessor flushed first)."""
    assert daemon.tracing is not None
    assert daemon.tracing.provider.force_flush(10_000)
    return list(exporter.get_finished_spans())


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def ended(
    daemon: Daemon, exporter: InMemorySpanExporter, name: str, count: int
) -> list[ReadableSpan]:
    """The spans named `name` once there are `count` (polled, 10 s at most). The caller can
    see an aborted RPC's status (NOT_FOUND) a moment before its span ends: seen once in a
    loaded clean-clone run (2 spans of 3), the race test_auth waits out for its audit line."""
    deadline = time.monotonic() + 10
    while len(spans := named(finished(daemon, exporter), name)) < count:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    return spans


def attributes(span: ReadableSpan, *names: str) -> dict[str, object]:
    """The span's values of these attributes (None where missing)."""
    assert span.attributes is not None
    return {name: span.attributes.get(name) for name in names}


async def test_route_span_continues_the_callers_trace(
    stub: tuple[Daemon, Any], exporter: InMemorySpanExporter
) -> None:
    """traceparent/tracestate in the metadata: the Route span has that trace id, the caller's
    span as parent, its trace state, and the decision's attributes."""
    daemon, router = stub
    metadata = (("traceparent", traceparent()), ("tracestate", "gw=route-1"))
    reply = await router.Route(ROUTE, metadata=metadata)
    (span,) = named(finished(daemon, exporter), "banditd.v1.Router/Route")
    assert span.kind is SpanKind.SERVER
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    assert span.context.trace_state.get("gw") == "route-1"
    expected = {
        "rpc.system": "grpc", "rpc.service": "banditd.v1.Router", "rpc.method": "Route",
        "rpc.grpc.status_code": 0, "banditd.policy": "chat", "banditd.segment": "eu",
        "banditd.arm": reply.arm_id, "banditd.decision_id": reply.decision_id,
        "banditd.model_version": reply.model_version, "banditd.degraded": False,
        "banditd.candidates": 3,
    }  # fmt: skip
    assert attributes(span, *expected) == expected
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "banditd"


async def test_feedback_spans_carry_the_status(
    stub: tuple[Daemon, Any], exporter: InMemorySpanExporter
) -> None:
    """Feedback spans: APPLIED then DUPLICATE with the decision and arm; an unknown decision
    is NOT_FOUND, the caller's business: status code attribute, span status left unset."""
    daemon, router = stub
    reply = await router.Route(ROUTE)
    other = "0af7651916cd43dd8448eb211c80319c"
    metadata = (("traceparent", traceparent(other, "b7ad6b7169203331")),)
    request = pb.FeedbackRequest(decision_id=reply.decision_id, reward=1.0)
    await router.Feedback(request, metadata=metadata)
    await router.Feedback(request, metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router.Feedback(pb.FeedbackRequest(decision_id=UNKNOWN_ID, reward=1.0))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    spans = await ended(daemon, exporter, "banditd.v1.Router/Feedback", 3)
    assert len(spans) == 3
    applied, duplicate, unknown = spans
    for span, status in ((applied, "APPLIED"), (duplicate, "DUPLICATE")):
        assert span.context is not None
        assert format(span.context.trace_id, "032x") == other
        expected = {
            "banditd.decision_id": reply.decision_id, "banditd.feedback.status": status,
            "banditd.arm": reply.arm_id, "rpc.grpc.status_code": 0,
        }  # fmt: skip
        assert attributes(span, *expected) == expected
    assert unknown.attributes is not None
    assert unknown.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert unknown.status.status_code is StatusCode.UNSET
    assert unknown.parent is None  # no traceparent: a trace of its own


async def test_feedback_batch_is_one_span(
    stub: tuple[Daemon, Any], exporter: InMemorySpanExporter
) -> None:
    """FeedbackBatch: one span with the item and failure counts."""
    daemon, router = stub
    reply = await router.Route(ROUTE)
    await router.FeedbackBatch(pb.FeedbackBatchRequest(items=[
        pb.FeedbackRequest(decision_id=reply.decision_id, reward=1.0),
        pb.FeedbackRequest(decision_id=UNKNOWN_ID, reward=1.0),
    ]))  # fmt: skip
    (span,) = named(finished(daemon, exporter), "banditd.v1.Router/FeedbackBatch")
    assert span.attributes is not None
    assert span.attributes["banditd.feedback.items"] == 2
    assert span.attributes["banditd.feedback.failed"] == 1


async def test_a_caller_that_does_not_sample_gets_no_span(
    stub: tuple[Daemon, Any], exporter: InMemorySpanExporter
) -> None:
    """Parent-based sampling: a traceparent with the sampled flag off records nothing."""
    daemon, router = stub
    await router.Route(ROUTE, metadata=(("traceparent", traceparent(flags="00")),))
    await router.Route(ROUTE)  # no traceparent: sampled at sample_ratio 1
    (span,) = named(finished(daemon, exporter), "banditd.v1.Router/Route")
    assert span.parent is None


async def test_redis_store_operations_are_child_spans(
    redis_url: str, exporter: InMemorySpanExporter
) -> None:
    """On the Redis store, Route's load and record and Feedback's settle are CLIENT spans under
    the RPC's span; the store watcher's pings and the expiry sweep start no trace."""
    prefix = f"trace-{uuid.uuid4().hex[:8]}"
    settings = traced_settings(
        store={"backend": "redis", "redis": {"url": redis_url, "key_prefix": prefix}}
    )
    daemon = await _started(settings, exporter)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            router = pb_grpc.RouterStub(channel)
            metadata = (("traceparent", traceparent()),)
            reply = await router.Route(ROUTE, metadata=metadata)
            await router.Feedback(
                pb.FeedbackRequest(decision_id=reply.decision_id, reward=1.0), metadata=metadata
            )
        await daemon.sweep_once()  # the sweeper's store.expire, outside any RPC
        spans = finished(daemon, exporter)
    finally:
        await daemon.stop(grace_s=0)
    (route,) = named(spans, "banditd.v1.Router/Route")
    (feedback,) = named(spans, "banditd.v1.Router/Feedback")
    assert route.context is not None
    assert feedback.context is not None
    children = {s.name: s for s in spans if s.parent is not None and not s.parent.is_remote}
    assert set(children) == {"store.load", "store.record", "store.settle"}
    for name, parent in (("store.load", route), ("store.record", route),
                         ("store.settle", feedback)):  # fmt: skip
        span = children[name]
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == parent.context.span_id
        assert span.attributes is not None
        assert span.attributes["db.system"] == "redis"
    record, settle = children["store.record"].attributes, children["store.settle"].attributes
    assert record is not None
    assert settle is not None
    assert record["banditd.decision_id"] == reply.decision_id
    assert record["banditd.arm"] == reply.arm_id
    assert (settle["banditd.outcome"], settle["banditd.segment"]) == ("applied", "eu")
    load = {"banditd.policy": "chat", "banditd.segment": "eu", "banditd.arms": 3}
    assert attributes(children["store.load"], *load) == load


class CollectorStandIn(otlp_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[otlp.ExportTraceServiceRequest] = []

    def Export(self, request: otlp.ExportTraceServiceRequest, context: Any) -> Any:
        self.requests.append(request)
        return otlp.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[CollectorStandIn, int]]:
    receiver = CollectorStandIn()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(grace=None)


async def test_spans_leave_over_otlp_by_stop(collector: tuple[CollectorStandIn, int]) -> None:
    """No exporter given: the OTLP/gRPC exporter sends the Route span to the configured
    endpoint, with the service name and headers; stopping the daemon flushes it."""
    receiver, port = collector
    settings = daemon_settings(tracing={
        "enabled": True, "endpoint": f"http://127.0.0.1:{port}", "service_name": "router-eu",
        "headers": "x-tenant=acme",
    })  # fmt: skip
    daemon = build_daemon(settings)
    await daemon.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            await pb_grpc.RouterStub(channel).Route(
                ROUTE, metadata=(("traceparent", traceparent()),)
            )
    finally:
        await daemon.stop(grace_s=0)
    spans = [
        (resource.resource, span)
        for request in receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    routes = [(r, s) for r, s in spans if s.name == "banditd.v1.Router/Route"]
    assert len(routes) == 1
    resource, span = routes[0]
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "router-eu"


# Builds a daemon with tracing off, serves a Route, stops, and prints the opentelemetry modules
# loaded. argv[1] == "blocked": opentelemetry cannot be imported at all (as without the otel
# extra); a finder refuses it before anything is imported.
_SERVE_UNTRACED = """
import asyncio, json, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
        return None

if sys.argv[1] == "blocked":
    sys.meta_path.insert(0, Blocked())

import grpc
from banditd.api.v1 import bandit_pb2 as pb, bandit_pb2_grpc as pb_grpc
from banditd.server.app import build_daemon
from tests.integration.conftest import daemon_settings

async def main() -> None:
    daemon = build_daemon(daemon_settings())
    await daemon.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        reply = await pb_grpc.RouterStub(channel).Route(pb.RouteRequest(
            policy="chat", context=pb.Context(features={"x1": 1.0}),
            candidates=[pb.Candidate(id="a")]))
        assert reply.arm_id == "a"
    await daemon.stop(grace_s=0)
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"
                            or m == "banditd.server.tracing")))

asyncio.run(main())
"""
# What only tracing uses. (redis-py >= 8 imports parts of the OpenTelemetry API and metrics SDK
# when they are installed, for its own optional metrics: that is redis-py's, and not these.)
TRACING_ONLY = {"banditd.server.tracing", "opentelemetry.sdk.trace", "opentelemetry.propagate",
                "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"}  # fmt: skip


def _untraced_modules(mode: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_UNTRACED, mode], cwd=ROOT, capture_output=True, text=True,
        timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_tracing_off_needs_no_opentelemetry() -> None:
    """Tracing off (the default) with OpenTelemetry unimportable: the daemon builds, serves a
    Route and stops, and nothing of it was loaded."""
    assert _untraced_modules("blocked") == set()


def test_tracing_off_imports_none_of_the_tracing_code() -> None:
    """Tracing off with the otel extra installed: banditd's tracing module, the trace SDK, the
    propagators and the exporter are never imported."""
    modules = _untraced_modules("installed")
    assert modules & TRACING_ONLY == set()


async def test_tracing_off_builds_no_provider() -> None:
    """Off, the daemon has no tracer provider (nothing to flush on stop); on, it has one."""
    assert build_daemon(daemon_settings()).tracing is None
    on = build_daemon(traced_settings(), span_exporter=InMemorySpanExporter())
    assert on.tracing is not None
    on.tracing.shutdown()


def test_enabled_without_the_exporter_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """check-config and serve refuse tracing.enabled when the protocol's exporter is missing."""
    import importlib.util

    real = importlib.util.find_spec

    def missing(name: str, *args: Any) -> Any:
        return None if name.startswith("opentelemetry.exporter") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    with pytest.raises(ValueError, match="the otel extra"):
        TracingSettings(enabled=True)
    TracingSettings(enabled=False)  # off: nothing is needed
