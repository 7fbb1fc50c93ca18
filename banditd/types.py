"""Domain values and the ports (Protocols) the application core talks to.

Adapters (state/, features/, sim/, server/) implement these structurally; the core never
imports redis, grpc or onnxruntime.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from banditd.policies.linear import ArmState, Vector

ArmId = str
DecisionId = str
# A policy name: it becomes part of Redis keys (a Cluster hash tag) and of decision ids, so
# nothing else is allowed. Always used with fullmatch ("$" would let a trailing newline in).
POLICY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ModelKey(NamedTuple):
    """One learned model: a policy within a context segment.

    A NamedTuple, not a dataclass: it keys the stores' dicts on every Route and Feedback, and
    a tuple hashes in C.
    """

    policy: str
    segment: str = ""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a store must know about a policy's model to apply updates and expiries.

    dim: length of the update vectors; l2: ridge λ; decay_factor: γ applied once per
    decay_interval_s (1.0 = no forgetting); default_reward: applied to decisions whose reward
    never came (None = drop them); fingerprint: of the feature pipeline (a store refuses, with
    FailedPreconditionError, to score or update a model built under another fingerprint).
    max_segments / evict_lru / segment_ttl_s bound the policy's segments (a Route's load
    refuses a new one at the limit, or its record evicts the least recently used; idle ones
    expire). reward_wait_s: a decision's deadline comes this long after its Route (0 =
    unknown); an expiry sweep may wait that long to look again where nothing was pending.
    """

    dim: int
    l2: float = 1.0
    decay_factor: float = 1.0
    decay_interval_s: float = 3600.0
    default_reward: float | None = None
    fingerprint: str = ""  # the feature pipeline's; state built under another is refused
    max_segments: int = 0  # segments a policy may have (0 = no limit)
    evict_lru: bool = False  # at max_segments: forget the least recently used (else refuse)
    segment_ttl_s: float = 0.0  # forget a segment unused this long (0 = never)
    reward_wait_s: float = 0.0  # deadline - Route time of its decisions (0 = unknown)

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.l2 <= 0 or not 0 < self.decay_factor <= 1:
            raise ValueError(f"invalid model spec {self}")
        if self.decay_interval_s <= 0:
            raise ValueError(f"decay_interval_s must be > 0, got {self.decay_interval_s}")


@dataclass(frozen=True, slots=True)
class Context:
    """The request context as the caller sent it."""

    text: str = ""
    features: Mapping[str, float] = field(default_factory=dict)
    categorical: Mapping[str, str] = field(default_factory=dict)
    embedding: Sequence[float] = ()


class Candidate(NamedTuple):
    """One arm offered for a request (a NamedTuple: built K times per Route, on the hot path)."""

    id: ArmId
    features: Sequence[float] = ()
    cost: float = 0.0
    expected_latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingDecision:
    """A decision waiting for its reward: everything the update needs, and when it expires.

    x is the exact vector the chosen arm was scored with (what the update adds to S and b);
    model_arm is the state the update goes to when it is not the arm's own (shared model).
    """

    decision_id: DecisionId
    policy: str
    segment: str
    arm: ArmId
    x: Vector
    propensity: float
    model_version: int
    created_at: float
    deadline: float
    model_arm: ArmId = ""

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.policy, self.segment)

    @property
    def state_arm(self) -> ArmId:
        """The arm whose state this decision's reward updates."""
        return self.model_arm or self.arm


class Outcome(enum.Enum):
    """How a decision ended (or why a feedback was not applied)."""

    APPLIED = "applied"  # the caller's reward was applied
    DUPLICATE = "duplicate"  # a reward was already applied; this one was not
    EXPIRED = "expired"  # feedback came after the wait window
    UNKNOWN = "unknown"  # no such decision (never made, or forgotten)
    DEFAULTED = "defaulted"  # no reward came; the policy's default reward was applied
    DROPPED = "dropped"  # no reward came; the policy drops such decisions


@dataclass(frozen=True, slots=True)
class Settlement:
    """The result of settling one decision (by feedback or by expiry)."""

    outcome: Outcome
    decision_id: DecisionId
    arm: ArmId = ""
    policy: str = ""
    segment: str = ""
    reward: float | None = None
    model_version: int = 0
    settled_at: float = 0.0  # when the decision was first settled (for EXPIRED: its expiry)


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """The per-arm states of one model at one version, as Route scores them."""

    arms: Mapping[ArmId, ArmState]
    version: int
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment of a policy: when a Route last used it, its arms with state, its version."""

    segment: str
    last_used: float
    arms: int
    version: int


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (a fake in tests and the simulator)."""
        ...


class ModelStore(Protocol):
    """Learned state and pending decisions. Settling is atomic: a decision is applied once."""

    # True when overlapping `settle` calls for distinct decisions run in parallel (a network
    # store): the Router then settles a FeedbackBatch's independent items concurrently.
    concurrent: bool

    async def load(
        self, key: ModelKey, arms: Sequence[ArmId], spec: ModelSpec, for_route: bool = False
    ) -> ModelSnapshot:
        """States of these arms (the prior for arms never updated). Changes nothing.

        for_route: a Route will decide on them, so a segment new to the store is refused with
        ResourceExhaustedError when the policy has max_segments already (unless evict_lru).
        """
        ...

    async def record(self, decision: PendingDecision, spec: ModelSpec | None = None) -> DecisionId:
        """Log a pending decision until its deadline; returns the id it is logged under (its
        own, or a buffered one (feedback/ids.py) while a shared store is unreachable).

        It also registers the decision's segment as used at its created_at; with a `spec`
        whose segment limit is reached and evict_lru set, the least recently used segment is
        forgotten to make room. (The limit was checked by the Route's load; a decision logged
        is never refused for it.)
        """
        ...

    async def settle(
        self, decision_id: DecisionId, reward: float, now: float, spec: ModelSpec
    ) -> Settlement:
        """Join a reward to its decision and update the model, exactly once.

        A decision found past its deadline is settled by its expiry rule and reported EXPIRED.
        """
        ...

    async def expire(
        self, now: float, limit: int, specs: Mapping[str, ModelSpec]
    ) -> list[Settlement]:
        """Settle up to `limit` decisions whose deadline passed: DEFAULTED or DROPPED."""
        ...

    async def segments(self, policy: str) -> list[SegmentInfo]:
        """The policy's registered segments, most recently used first."""
        ...

    async def delete_segment(self, policy: str, segment: str) -> bool:
        """Forget a segment's learned state; False if it had none."""
        ...

    async def close(self) -> None: ...


class FeatureExtractor(Protocol):
    """Turns a request context into the policy's context vector."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Changes whenever the vector's meaning changes (names, order, scaling, model)."""
        ...

    async def extract(self, context: Context) -> Vector: ...


class TraceSink(Protocol):
    """Append-only decision/outcome log for replay (sim/traces.py documents the schema)."""

    def write(self, record: Mapping[str, object]) -> None: ...
