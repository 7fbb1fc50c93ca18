"""OpenTelemetry traces of the gRPC edge and the Redis store (the `otel` extra).

Only server/app.py imports this module, and only when `[tracing] enabled = true`: with tracing
off, nothing of OpenTelemetry is imported and no handler checks a flag, because the wrappers
below are put in place (or not) once, when the daemon is built.

- `TracedRouterService` wraps the Router service. Each RPC is a SERVER span named
  `banditd.v1.Router/<method>`, a child of the caller's W3C trace context (`traceparent` /
  `tracestate` in the gRPC metadata; the propagators are OTEL_PROPAGATORS', by default W3C
  trace context and baggage), with the RPC semantic-convention attributes and ours:
  banditd.policy, .segment, .arm, .decision_id, .model_version, .degraded, .feedback.status.
  Its status is ERROR for the codes the convention calls server errors (UNKNOWN, INTERNAL,
  UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED, DATA_LOSS); a NOT_FOUND or INVALID_ARGUMENT is
  the caller's business and only shows as rpc.grpc.status_code.
- `TracedStore` wraps the Router's view of the Redis store: one CLIENT span per store
  operation (load, record, settle, expire: one Lua script or pipeline each), not per Redis
  command, and only inside a recorded span (the sweeper's expiries start no traces).
- `Tracing` owns the TracerProvider (not the global one: tests build several daemons), its
  sampler (parent-based: the caller's sampled flag decides; traces started here are kept at
  `sample_ratio`) and a BatchSpanProcessor exporting over OTLP, or to a given exporter.
"""

# ruff: noqa: N802  (the servicer's methods are named as the proto's RPCs, as in service.py)
from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from banditd import __version__
from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.errors import BanditdError
from banditd.server.guard import status_for
from banditd.server.service import RouterService
from banditd.types import (
    ArmId,
    DecisionId,
    ModelKey,
    ModelSnapshot,
    ModelSpec,
    ModelStore,
    PendingDecision,
    SegmentInfo,
    Settlement,
)

SERVICE = pb.DESCRIPTOR.services_by_name["Router"].full_name
FLUSH_TIMEOUT_S = 2.0  # on stop: spans still queued get this long to leave, then are dropped
# Server-side codes the RPC semantic conventions count as errors of the server.
_SERVER_ERRORS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})  # fmt: skip
_FEEDBACK_STATUS = {
    value: name.removeprefix("FEEDBACK_STATUS_")
    for name, value in pb.FeedbackStatus.items()  # APPLIED, DUPLICATE, ...
}


@dataclass(frozen=True, slots=True)
class TracingOptions:
    """What config [tracing] sets; an empty field leaves its OTEL_* variable in charge."""

    endpoint: str = ""
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    service_name: str = ""  # '' = OTEL_SERVICE_NAME, else "banditd"
    sample_ratio: float | None = None  # None = OTEL_TRACES_SAMPLER(_ARG), else keep all
    headers: tuple[tuple[str, str], ...] = ()


Metadata = Sequence[tuple[str, str | bytes]]


class _MetadataGetter(Getter[Metadata]):
    """Reads W3C trace context from gRPC invocation metadata (keys arrive lower-case)."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = [v if isinstance(v, str) else v.decode() for k, v in carrier if k == key]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


def otlp_exporter(options: TracingOptions) -> SpanExporter:
    """The OTLP span exporter for `options.protocol`; unset fields come from OTEL_* env."""
    kwargs: dict[str, Any] = {}
    if options.endpoint:
        kwargs["endpoint"] = options.endpoint
    if options.headers:
        kwargs["headers"] = dict(options.headers)
    if options.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:  # needs opentelemetry-exporter-otlp-proto-http (config checks it is installed)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[no-redef,import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    exporter: SpanExporter = OTLPSpanExporter(**kwargs)
    return exporter


class Tracing:
    """The daemon's tracer provider and the wrappers that put its spans in place."""

    def __init__(self, options: TracingOptions, exporter: SpanExporter | None = None) -> None:
        name = options.service_name or os.environ.get("OTEL_SERVICE_NAME") or "banditd"
        resource = Resource.create({  # merged over OTEL_RESOURCE_ATTRIBUTES
            "service.name": name, "service.version": __version__,
            "host.name": socket.gethostname(),  # the pod's name in Kubernetes
        })  # fmt: skip
        sampler = None  # TracerProvider reads OTEL_TRACES_SAMPLER(_ARG) itself
        if options.sample_ratio is not None:
            sampler = ParentBased(TraceIdRatioBased(options.sample_ratio))
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        self.provider.add_span_processor(BatchSpanProcessor(exporter or otlp_exporter(options)))
        self.tracer = self.provider.get_tracer("banditd", __version__)

    def router_service(self, inner: RouterService) -> TracedRouterService:
        return TracedRouterService(inner, self.tracer)

    def store(self, inner: ModelStore, system: str) -> TracedStore:
        return TracedStore(inner, self.tracer, system)

    def shutdown(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Export what is queued and stop, waiting `timeout_s` at most: an unreachable
        collector must not hold up the pod's shutdown (the exporter retries for longer)."""
        stopper = threading.Thread(target=self.provider.shutdown, name="otel-shutdown", daemon=True)
        stopper.start()
        stopper.join(timeout_s)


def _status_code(context: Any, exc: BaseException) -> grpc.StatusCode:
    """The status the client gets for an RPC that raised `exc` (the guard's answer for a
    BanditdError or a bug, else what the handler aborted with)."""
    if isinstance(exc, BanditdError):
        return status_for(exc)
    if isinstance(exc, asyncio.CancelledError):  # the caller went away or its deadline passed
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.INTERNAL


class TracedRouterService(pb_grpc.RouterServicer):
    """RouterService with a SERVER span around each RPC, in the caller's trace."""

    def __init__(self, inner: RouterService, tracer: trace.Tracer) -> None:
        self._inner = inner
        self._tracer = tracer

    @contextmanager
    def _span(self, method: str, context: Any) -> Iterator[Span]:
        parent = propagate.extract(context.invocation_metadata() or (), getter=_GETTER)
        with self._tracer.start_as_current_span(
            f"{SERVICE}/{method}", context=parent, kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method},
            record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            try:
                yield span
            except BaseException as exc:
                code = _status_code(context, exc)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in _SERVER_ERRORS:
                    details = context.details() or type(exc).__name__
                    span.set_status(Status(StatusCode.ERROR, str(details)))
                    if not isinstance(exc, grpc.aio.AbortError):
                        span.record_exception(exc)
                raise
            span.set_attribute("rpc.grpc.status_code", 0)

    async def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:
        with self._span("Route", context) as span:
            if span.is_recording():
                span.set_attributes({
                    "banditd.policy": request.policy, "banditd.segment": request.segment,
                    "banditd.candidates": len(request.candidates),
                })  # fmt: skip
            response = await self._inner.Route(request, context)
            if span.is_recording():
                span.set_attributes({
                    "banditd.arm": response.arm_id, "banditd.decision_id": response.decision_id,
                    "banditd.propensity": response.propensity,
                    "banditd.model_version": response.model_version,
                    "banditd.degraded": response.degraded,
                })  # fmt: skip
            return response

    async def Feedback(self, request: pb.FeedbackRequest, context: Any) -> pb.FeedbackResponse:
        with self._span("Feedback", context) as span:
            if span.is_recording():
                span.set_attribute("banditd.decision_id", request.decision_id)
            response = await self._inner.Feedback(request, context)
            if span.is_recording():
                span.set_attributes({
                    "banditd.feedback.status": _FEEDBACK_STATUS.get(response.status, "?"),
                    "banditd.arm": response.arm_id, "banditd.reward": response.reward,
                    "banditd.model_version": response.model_version,
                })  # fmt: skip
            return response

    async def FeedbackBatch(
        self, request: pb.FeedbackBatchRequest, context: Any
    ) -> pb.FeedbackBatchResponse:
        with self._span("FeedbackBatch", context) as span:
            response = await self._inner.FeedbackBatch(request, context)
            if span.is_recording():
                failed = sum(1 for r in response.results if r.code)
                span.set_attributes({
                    "banditd.feedback.items": len(request.items), "banditd.feedback.failed": failed,
                })  # fmt: skip
            return response

    async def ReportResidency(
        self, request: pb.ReportResidencyRequest, context: Any
    ) -> pb.PagingPlan:
        with self._span("ReportResidency", context) as span:
            span.set_attribute("banditd.replica", request.replica)
            return await self._inner.ReportResidency(request, context)

    async def GetPagingPlan(self, request: pb.GetPagingPlanRequest, context: Any) -> pb.PagingPlan:
        with self._span("GetPagingPlan", context) as span:
            span.set_attribute("banditd.replica", request.replica)
            return await self._inner.GetPagingPlan(request, context)


class TracedStore:
    """A ModelStore whose operations are CLIENT spans, when they run inside a recorded span."""

    def __init__(self, inner: ModelStore, tracer: trace.Tracer, system: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self._system = system
        self.concurrent = inner.concurrent

    @contextmanager
    def _span(self, operation: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            f"store.{operation}", kind=SpanKind.CLIENT,
            attributes={"db.system": self._system, "db.operation": operation, **attributes},
        ) as span:  # fmt: skip
            yield span  # an exception is recorded, and sets the status, by the SDK

    async def load(
        self, key: ModelKey, arms: Sequence[ArmId], spec: ModelSpec, for_route: bool = False
    ) -> ModelSnapshot:
        if not trace.get_current_span().is_recording():
            return await self._inner.load(key, arms, spec, for_route)
        attributes = {"banditd.policy": key.policy, "banditd.segment": key.segment,
                      "banditd.arms": len(arms)}  # fmt: skip
        with self._span("load", attributes) as span:
            snapshot = await self._inner.load(key, arms, spec, for_route)
            span.set_attributes({"banditd.model_version": snapshot.version,
                                 "banditd.degraded": snapshot.degraded})  # fmt: skip
            return snapshot

    async def record(self, decision: PendingDecision, spec: ModelSpec | None = None) -> DecisionId:
        if not trace.get_current_span().is_recording():
            return await self._inner.record(decision, spec)
        attributes = {
            "banditd.policy": decision.policy, "banditd.segment": decision.segment,
            "banditd.arm": decision.arm, "banditd.decision_id": decision.decision_id,
        }  # fmt: skip
        with self._span("record", attributes) as span:
            logged_as = await self._inner.record(decision, spec)
            span.set_attribute("banditd.buffered", logged_as != decision.decision_id)
            return logged_as

    async def settle(
        self, decision_id: DecisionId, reward: float, now: float, spec: ModelSpec
    ) -> Settlement:
        if not trace.get_current_span().is_recording():
            return await self._inner.settle(decision_id, reward, now, spec)
        with self._span("settle", {"banditd.decision_id": decision_id}) as span:
            settled = await self._inner.settle(decision_id, reward, now, spec)
            span.set_attributes({
                "banditd.outcome": settled.outcome.value, "banditd.policy": settled.policy,
                "banditd.segment": settled.segment, "banditd.arm": settled.arm,
            })  # fmt: skip
            return settled

    async def expire(
        self, now: float, limit: int, specs: Mapping[str, ModelSpec]
    ) -> list[Settlement]:
        if not trace.get_current_span().is_recording():
            return await self._inner.expire(now, limit, specs)
        with self._span("expire", {"banditd.limit": limit}) as span:
            settled = await self._inner.expire(now, limit, specs)
            span.set_attribute("banditd.settled", len(settled))
            return settled

    async def segments(self, policy: str) -> list[SegmentInfo]:
        return await self._inner.segments(policy)

    async def delete_segment(self, policy: str, segment: str) -> bool:
        return await self._inner.delete_segment(policy, segment)

    async def close(self) -> None:
        await self._inner.close()
