"""What the clients return: frozen dataclasses and enums with names, built from the protobuf
responses, each keeping the message itself in `raw` (for fields added after this client).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import grpc

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import bandit_pb2 as pb

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class FeedbackStatus(enum.Enum):
    """What a Feedback did (banditd.v1.FeedbackStatus): prints as FeedbackStatus.APPLIED."""

    UNSPECIFIED = pb.FEEDBACK_STATUS_UNSPECIFIED
    APPLIED = pb.FEEDBACK_STATUS_APPLIED  # joined to its decision and learned from
    DUPLICATE = pb.FEEDBACK_STATUS_DUPLICATE  # the decision already had its reward; not applied

    @classmethod
    def _missing_(cls, value: object) -> FeedbackStatus:
        return cls.UNSPECIFIED  # a status newer than this client (its number is in `raw`)


@dataclass(frozen=True, slots=True)
class ArmScore:
    """Why a candidate got its score: score = estimate + bonus - penalty."""

    arm_id: str
    estimate: float  # θ·x
    bonus: float  # exploration: LinUCB's α·sqrt(xᵀA⁻¹x), or Thompson's sample - estimate
    penalty: float  # cost, latency and paging prices
    score: float
    propensity: float  # probability the policy picks this arm for this context
    pulls: int  # rewards this arm learned from in this (policy, segment)


@dataclass(frozen=True, slots=True)
class Decision:
    """A Route's answer: serve `arm_id`, then send Feedback for `decision_id`."""

    decision_id: str
    arm_id: str
    propensity: float
    scores: tuple[ArmScore, ...]  # one per candidate, in request order
    model_version: int
    algorithm: str  # "linucb" or "thompson"
    degraded: bool  # the shared store was unreachable; a cached model answered
    pipeline_fingerprint: str
    feedback_deadline_unix_s: float  # Feedback after this is refused
    paging: pb.PagingAdvice | None  # set when the request named a replica that pages adapters
    raw: pb.RouteResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, r: pb.RouteResponse) -> Decision:
        return cls(
            r.decision_id, r.arm_id, r.propensity,
            tuple(ArmScore(s.arm_id, s.estimate, s.bonus, s.penalty, s.score, s.propensity,
                           s.pulls) for s in r.scores),
            r.model_version, r.algorithm, r.degraded, r.pipeline_fingerprint,
            r.feedback_deadline_unix_s, r.paging if r.HasField("paging") else None, r,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """A Feedback's answer (for DUPLICATE: the reward and version of the first, applied one)."""

    status: FeedbackStatus
    arm_id: str  # the decision's arm
    reward: float
    model_version: int  # after this decision's update
    raw: pb.FeedbackResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, r: pb.FeedbackResponse) -> FeedbackResult:
        return cls(FeedbackStatus(r.status), r.arm_id, r.reward, r.model_version, r)


@dataclass(frozen=True, slots=True)
class FeedbackItemResult:
    """One FeedbackBatch item: the status its own Feedback call would have had."""

    decision_id: str
    code: grpc.StatusCode  # OK, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE
    error: str  # what was wrong, when code is not OK
    result: FeedbackResult | None  # set when code is OK
    raw: pb.FeedbackBatchResult = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK

    @classmethod
    def from_proto(cls, r: pb.FeedbackBatchResult) -> FeedbackItemResult:
        code = _CODES.get(r.code, grpc.StatusCode.UNKNOWN)
        result = FeedbackResult.from_proto(r.response) if r.HasField("response") else None
        return cls(r.decision_id, code, r.error, result, r)


# -- Admin ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PolicyInfo:
    name: str
    declared: bool  # in the daemon's config
    stored: bool  # has decisions or learned state in the store


@dataclass(frozen=True, slots=True)
class LearnedArm:
    segment: str
    arm_id: str
    pulls: int  # rewards learned from


@dataclass(frozen=True, slots=True)
class Arms:
    """A policy's routable arms and what each (segment, arm) has learned."""

    policy: str
    arms: tuple[str, ...]
    learned: tuple[LearnedArm, ...]
    raw: apb.ListArmsResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, r: apb.ListArmsResponse) -> Arms:
        learned = tuple(LearnedArm(a.segment, a.arm_id, a.pulls) for a in r.learned)
        return cls(r.policy, tuple(r.arms), learned, r)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    segment: str
    last_used_unix_s: float  # refreshed at most once a minute
    arms: int  # arms with learned state in it
    version: int  # updates applied to its model


@dataclass(frozen=True, slots=True)
class Segments:
    """One page of a policy's segments, most recently used first, and how many there are."""

    policy: str
    segments: tuple[SegmentInfo, ...]
    total: int
    raw: apb.ListSegmentsResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, r: apb.ListSegmentsResponse) -> Segments:
        page = tuple(
            SegmentInfo(s.segment, s.last_used_unix_s, s.arms, s.version) for s in r.segments
        )
        return cls(r.policy, page, r.total, r)
