"""The join rule for delayed rewards. PURE: no I/O, time comes in as `now`.

A decision is pending from Route until its deadline (Route time + the policy's reward wait
window). Exactly one of these ends it:

- a Feedback before the deadline: the caller's reward is applied (APPLIED);
- the deadline passes: the policy's default reward is applied (DEFAULTED), or it is dropped
  (DROPPED).

Once ended, the decision leaves a tombstone, so a second Feedback is DUPLICATE (acknowledged,
not applied) and a late one is EXPIRED, instead of both looking like an unknown id. Every store
(memory, Redis) implements this same table; the Redis store does it inside one Lua script.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from banditd.types import ArmId, DecisionId, Outcome, PendingDecision


class Verdict(enum.Enum):
    APPLY = "apply"  # apply the caller's reward now
    EXPIRE = "expire"  # pending but past its deadline: run the expiry rule, report EXPIRED
    DUPLICATE = "duplicate"
    EXPIRED = "expired"  # already ended by expiry
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is remembered of an ended decision (for duplicate and late feedback)."""

    decision_id: DecisionId
    outcome: Outcome  # APPLIED, DEFAULTED or DROPPED
    arm: ArmId
    reward: float | None
    settled_at: float
    model_version: int


def join(pending: PendingDecision | None, tombstone: Tombstone | None, now: float) -> Verdict:
    """Decide what a Feedback arriving at `now` does."""
    if pending is not None:
        return Verdict.APPLY if now <= pending.deadline else Verdict.EXPIRE
    if tombstone is None:
        return Verdict.UNKNOWN
    return Verdict.DUPLICATE if tombstone.outcome is Outcome.APPLIED else Verdict.EXPIRED


def expiry_outcome(default_reward: float | None) -> tuple[Outcome, float | None]:
    """What expiry does under a policy: apply its default reward, or drop the decision."""
    if default_reward is None:
        return Outcome.DROPPED, None
    return Outcome.DEFAULTED, default_reward
