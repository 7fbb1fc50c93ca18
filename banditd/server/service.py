"""RouterService: protobuf <-> domain, one log line per RPC.

No policy math and no store access here: everything goes through banditd.router.Router. The
error -> status table, undecodable requests and unexpected exceptions: banditd.server.guard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.cache.controller import Directive, Load, Residency
from banditd.cache.pager import Pager, PagingPlan
from banditd.errors import (
    LOG_VALUE_CHARS,
    BanditdError,
    DecisionExpiredError,
    DecisionNotFoundError,
    FailedPreconditionError,
    InvalidRequestError,
    clipped,
)
from banditd.feedback.ids import MAX_ID_CHARS
from banditd.policies.choice import one_hot, zeros
from banditd.router import FeedbackResult, Router, RouteResult
from banditd.server.guard import abort, abort_with, status_for, status_message
from banditd.server.metrics import Metrics
from banditd.server.request_log import request_fields
from banditd.types import Candidate, Context, Outcome

log = structlog.get_logger("banditd.rpc")

_FEEDBACK_STATUS = {
    Outcome.APPLIED: pb.FEEDBACK_STATUS_APPLIED,
    Outcome.DUPLICATE: pb.FEEDBACK_STATUS_DUPLICATE,
}

MAX_TEXT_BYTES = 256 * 1024
MAX_LOAD_MS = 3_600_000.0  # a reported adapter load time over an hour is a caller's bug
MAX_ADAPTER_BYTES = 1 << 40


def to_context(msg: pb.Context) -> Context:
    """The request's context; its maps and lists are protobuf's own (read-only Mappings and
    Sequences), not copies: the extractors read them once."""
    text = msg.text
    # A character takes 1-4 bytes in UTF-8: only a long text needs encoding to be measured.
    if len(text) * 4 > MAX_TEXT_BYTES and len(text.encode("utf-8", "surrogatepass")) > (
        MAX_TEXT_BYTES
    ):
        raise InvalidRequestError(f"context.text is over {MAX_TEXT_BYTES} bytes")
    return Context(text, msg.features, msg.categorical, msg.embedding)


_candidate = Candidate._make


def to_candidates(msgs: Any) -> list[Candidate]:
    """One tuple per candidate (features stay protobuf's repeated field: a Sequence)."""
    return list(map(_candidate, [(c.id, c.features, c.cost, c.expected_latency_ms) for c in msgs]))


def to_route_response(result: RouteResult) -> pb.RouteResponse:
    choice = result.choice
    paging = None
    if result.paging is not None:
        advice = result.paging
        paging = pb.PagingAdvice(
            replica=advice.replica, must_load=advice.must_load,
            paging_latency_ms=advice.latency_ms, paging_penalty=advice.penalty,
            epoch=advice.epoch, directives=to_directives(advice.directives),
        )  # fmt: skip
    response = pb.RouteResponse(
        paging=paging,
        decision_id=result.decision_id,
        arm_id=result.arm,
        propensity=result.propensity,
        model_version=result.model_version,
        algorithm=result.algorithm,
        degraded=result.degraded,
        pipeline_fingerprint=result.fingerprint,
        feedback_deadline_unix_s=result.deadline,
    )
    # scores.add builds each ArmScore in place (a list passed to the constructor is copied);
    # tolist() converts each array to Python floats in one call. Fields that are zero for
    # every arm (no price: penalty; a sure choice: every propensity but one) are not passed:
    # proto3 leaves them unset either way, and each keyword costs.
    add = response.scores.add
    estimates, bonuses, scores = choice.floats or (
        choice.estimate.tolist(), choice.bonus.tolist(), choice.score.tolist(),
    )  # fmt: skip
    columns = zip(result.candidates, estimates, bonuses, scores, result.pulls, strict=True)
    penalty, propensity = choice.penalty, choice.propensity
    if penalty is zeros(len(penalty)) and propensity is one_hot(len(propensity), choice.index):
        for arm, estimate, bonus, score, pulls in columns:
            add(arm_id=arm, estimate=estimate, bonus=bonus, score=score, pulls=pulls)
        response.scores[choice.index].propensity = 1.0
    else:
        for (arm, estimate, bonus, score, pulls), pen, prop in zip(
            columns, penalty.tolist(), propensity.tolist(), strict=True
        ):
            add(
                arm_id=arm, estimate=estimate, bonus=bonus, penalty=pen, score=score,
                propensity=prop, pulls=pulls,
            )  # fmt: skip
    return response


# -- paging (docs/paging.md) --------------------------------------------------------------------
_ACTION_LOAD = pb.PagingDirective.ACTION_LOAD
_ACTION_EVICT = pb.PagingDirective.ACTION_EVICT


def to_directives(directives: tuple[Directive, ...]) -> list[pb.PagingDirective]:
    return [
        pb.PagingDirective(
            action=_ACTION_LOAD if isinstance(d, Load) else _ACTION_EVICT, adapter_id=d.adapter
        )
        for d in directives
    ]


def to_paging_plan(plan: PagingPlan) -> pb.PagingPlan:
    return pb.PagingPlan(
        replica=plan.replica, epoch=plan.epoch, directives=to_directives(plan.directives),
        resident=sorted(plan.residency.resident),
        capacity_slots=plan.residency.capacity_slots,
        capacity_bytes=plan.residency.capacity_bytes,
    )  # fmt: skip


def to_residency(request: pb.ReportResidencyRequest) -> Residency:
    if not request.replica:
        raise InvalidRequestError("replica is required")
    ids = [a.adapter_id for a in request.adapters]
    if len(set(ids)) != len(ids) or not all(ids):
        raise InvalidRequestError("adapter ids must be non-empty and unique")
    if any(not 0 <= a.load_ms <= MAX_LOAD_MS for a in request.adapters):  # (False for NaN)
        raise InvalidRequestError(f"load_ms must be in [0, {MAX_LOAD_MS:g}]")
    if any(a.size_bytes > MAX_ADAPTER_BYTES for a in request.adapters):
        raise InvalidRequestError(f"size_bytes must be at most {MAX_ADAPTER_BYTES} (1 TiB)")
    return Residency(
        frozenset(a.adapter_id for a in request.adapters if a.resident),
        request.capacity_slots,
        request.capacity_bytes,
        {a.adapter_id: a.size_bytes for a in request.adapters if a.size_bytes},
        {a.adapter_id: a.load_ms for a in request.adapters if a.load_ms > 0},
    )


def to_feedback_response(result: FeedbackResult) -> pb.FeedbackResponse:
    return pb.FeedbackResponse(
        status=_FEEDBACK_STATUS[result.outcome],
        arm_id=result.arm,
        reward=result.reward,
        model_version=result.model_version,
    )


class RouterService(pb_grpc.RouterServicer):
    """The banditd.v1.Router gRPC service."""

    def __init__(
        self, router: Router, metrics: Metrics, pager: Pager | None = None, batch_max: int = 1000
    ) -> None:
        self._router = router
        self._metrics = metrics
        self._pager = pager
        self._batch_max = batch_max
        self._hot = metrics.hot

    def _done(
        self,
        rpc: str,
        context: Any,
        started: float,
        code: grpc.StatusCode,
        fields: Callable[[], dict[str, Any]],
    ) -> None:
        """Metrics, then the RPC's one canonical log line (info when OK, else warning).

        `fields` is only called when the line is written: at level warning a successful RPC
        builds no log fields at all.
        """
        elapsed = time.perf_counter() - started
        self._hot.rpc(rpc, code.name, elapsed)
        ok = code is grpc.StatusCode.OK
        if ok and not log.is_enabled_for(logging.INFO):
            return
        (log.info if ok else log.warning)(
            "rpc.completed", **_short(request_fields(context, rpc)), code=code.name,
            latency_ms=round(elapsed * 1e3, 3), **_short(fields()),
        )  # fmt: skip

    async def Route(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RouteResponse:
        started = time.perf_counter()
        try:
            result = await self._router.route(
                request.policy,
                request.segment,
                to_context(request.context),
                to_candidates(request.candidates),
                replica=request.replica,
            )
        except BanditdError as exc:
            error = str(exc)
            self._done(
                "Route", context, started, status_for(exc),
                lambda: {"policy": request.policy, "error": error},
            )  # fmt: skip
            await abort_with(context, exc)
        self._hot.decided(request.policy, result.model_version, result.degraded)
        if result.paging is not None:
            cache = self._metrics
            (
                cache.adapter_cache_misses if result.paging.must_load else cache.adapter_cache_hits
            ).inc()
        self._done("Route", context, started, grpc.StatusCode.OK, lambda: {
            "policy": request.policy, "segment": request.segment, "arm": result.arm,
            "propensity": round(result.propensity, 6), "k": len(result.candidates),
            "decision_id": result.decision_id, "model_version": result.model_version,
            "degraded": result.degraded,
            **({"replica": request.replica, "must_load": result.paging.must_load}
               if result.paging else {}),
        })  # fmt: skip
        return to_route_response(result)

    async def Feedback(
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FeedbackResponse:
        started = time.perf_counter()
        reward = request.reward if request.HasField("reward") else None
        try:
            result = await self._router.feedback(request.decision_id, reward, request.metrics)
        except BanditdError as exc:
            error = str(exc)
            self._count_unjoined(exc)
            self._done(
                "Feedback", context, started, status_for(exc),
                lambda: {"decision_id": request.decision_id, "error": error},
            )  # fmt: skip
            await abort_with(context, exc)
        self._count_joined(result)
        self._done("Feedback", context, started, grpc.StatusCode.OK, lambda: {
            "decision_id": request.decision_id, "outcome": result.outcome.value,
            "arm": result.arm, "reward": result.reward, "model_version": result.model_version,
        })  # fmt: skip
        return to_feedback_response(result)

    def _count_joined(self, result: FeedbackResult) -> None:
        """Count the outcome; an applied reward moves the policy's model version gauge."""
        self._hot.outcome(result.outcome.value)
        if result.outcome is Outcome.APPLIED:
            self._hot.versions[result.policy] = result.model_version  # the gauge

    def _count_unjoined(self, exc: BanditdError) -> None:
        if isinstance(exc, DecisionNotFoundError):
            outcome = "expired" if isinstance(exc, DecisionExpiredError) else "unknown"
            self._hot.outcome(outcome)

    async def FeedbackBatch(
        self, request: pb.FeedbackBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FeedbackBatchResponse:
        """Each item as its own Feedback call would be (Router.feedback_many); per-item codes."""
        started = time.perf_counter()
        items = request.items
        if len(items) > self._batch_max:
            error = (
                f"{len(items)} items in one FeedbackBatch; this server takes at most"
                f" {self._batch_max} (server.feedback_batch_max): split the batch"
            )
            code = grpc.StatusCode.INVALID_ARGUMENT
            self._done("FeedbackBatch", context, started, code, lambda: {"error": error})
            await abort(context, code, error)
        response = pb.FeedbackBatchResponse()
        add = response.results.add
        failed = 0
        outcomes = await self._router.feedback_many([
            (item.decision_id, item.reward if item.HasField("reward") else None,
             dict(item.metrics))
            for item in items
        ])  # fmt: skip
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BanditdError):
                self._count_unjoined(outcome)
                # An id no Route could have issued is echoed cut (it may be ~1 MiB long).
                echo = item.decision_id
                if len(echo) > MAX_ID_CHARS:
                    echo = clipped(echo, MAX_ID_CHARS)
                add(decision_id=echo, code=status_for(outcome).value[0],
                    error=status_message(str(outcome)))  # fmt: skip
                failed += 1
            else:
                self._count_joined(outcome)
                add(decision_id=item.decision_id, response=to_feedback_response(outcome))
        self._done("FeedbackBatch", context, started, grpc.StatusCode.OK, lambda: {
            "items": len(items), "failed": failed,
        })  # fmt: skip
        return response

    async def ReportResidency(
        self, request: pb.ReportResidencyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PagingPlan:
        started = time.perf_counter()
        try:
            if self._pager is None:
                raise FailedPreconditionError("no policy pages adapters (paging.enabled)")
            plan = await self._pager.report(request.replica, to_residency(request))
        except BanditdError as exc:
            error = str(exc)
            self._done(
                "ReportResidency", context, started, status_for(exc), lambda: {"error": error}
            )
            await abort_with(context, exc)
        self._done("ReportResidency", context, started, grpc.StatusCode.OK, lambda: {
            "replica": request.replica, "resident": len(plan.residency.resident),
            "directives": len(plan.directives),
        })  # fmt: skip
        return to_paging_plan(plan)

    async def GetPagingPlan(
        self, request: pb.GetPagingPlanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PagingPlan:
        started = time.perf_counter()
        try:
            if self._pager is None:
                raise FailedPreconditionError("no policy pages adapters (paging.enabled)")
            if not request.replica:
                raise InvalidRequestError("replica is required")
            plan = await self._pager.current(request.replica)
        except BanditdError as exc:
            error = str(exc)
            self._done("GetPagingPlan", context, started, status_for(exc), lambda: {"error": error})
            await abort_with(context, exc)
        self._done("GetPagingPlan", context, started, grpc.StatusCode.OK, lambda: {
            "replica": request.replica, "epoch": plan.epoch, "directives": len(plan.directives),
        })  # fmt: skip
        return to_paging_plan(plan)


def _short(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with long strings clipped: a log line must not copy a 900 KB input whole (tests
    and the bench log without configure_logging's processor, which does the same)."""
    return {
        k: clipped(v, LOG_VALUE_CHARS) if isinstance(v, str) and len(v) > LOG_VALUE_CHARS else v
        for k, v in fields.items()
    }
