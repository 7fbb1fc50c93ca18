"""Every Redis key and hash-field name banditd uses, and nowhere else. PURE.

All keys of one policy share the Redis Cluster hash tag `{<policy>}`, so they live in one slot
and one Lua script may touch them all. Policy names match [A-Za-z0-9_.-]{1,64} and the prefix
may not contain braces, so the tag is always exactly the policy name. Decision ids are
`<policy>:<hex>`, so a Feedback's keys are derivable from its id alone.

    <prefix>:policies                    SET   names of policies that ever recorded a decision
    <prefix>:{<policy>}:model            HASH  small per-policy metadata (fields below)
    <prefix>:{<policy>}:sums             HASH  "<segment> <arm>" -> codec sums blob (S, b, n, ...)
    <prefix>:{<policy>}:deadlines        ZSET  decision id scored by its deadline (unix s)
    <prefix>:{<policy>}:pending:<id>     HASH  one pending decision (PENDING_FIELDS), TTL
    <prefix>:{<policy>}:tomb:<id>        HASH  how a decision ended (TOMB_FIELDS), TTL
    <prefix>:{<policy>}:arms             SET   runtime arm list set by the Admin service
    <prefix>:{<policy>}:segments         ZSET  segment -> last use (unix s), for the segment
                                               limit and idle expiry
    <prefix>:{<policy>}:segarms          HASH  segment -> its sums fields, '\n'-separated

Fields of the model hash (segments and arm ids contain no whitespace, so a space separates):

    "c"                    policy-wide apply counter; never reset (stamps cached arm states)
    "v <segment>"          model version of (policy, segment): updates applied since reset
    "f <segment>"          fingerprint of the feature pipeline the model was built under
    "a <segment> <arm>"    stamp (value of "c") of the arm's last change
"""

from __future__ import annotations

import re

from banditd.types import POLICY_NAME

DEFAULT_PREFIX = "banditd"
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

COUNTER_FIELD = "c"
PENDING_FIELDS = (
    "segment", "arm", "x", "propensity", "model_version", "created_at", "deadline",
    "sums_field", "version_field", "fingerprint_field", "stamp_field",
)  # fmt: skip
TOMB_FIELDS = ("outcome", "arm", "reward", "settled_at", "model_version")


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise ValueError(f"key prefix {prefix!r} must match {_PREFIX.pattern} (no braces)")
    return prefix


def policy_of(decision_id: str) -> str:
    """The policy a decision id belongs to (`<policy>:<hex>`); ValueError if it has none."""
    policy, sep, rest = decision_id.rpartition(":")
    if not sep or not rest or not POLICY_NAME.fullmatch(policy):
        raise ValueError(f"decision id {decision_id[:80]!r} has no policy part")
    return policy


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_prefix(prefix)

    def _tag(self, policy: str) -> str:
        if not POLICY_NAME.fullmatch(policy):
            raise ValueError(f"policy name {policy[:80]!r} must match {POLICY_NAME.pattern}")
        return f"{self.prefix}:{{{policy}}}"

    def policies(self) -> str:
        return f"{self.prefix}:policies"

    def model(self, policy: str) -> str:
        return f"{self._tag(policy)}:model"

    def sums(self, policy: str) -> str:
        return f"{self._tag(policy)}:sums"

    def deadlines(self, policy: str) -> str:
        return f"{self._tag(policy)}:deadlines"

    def arms(self, policy: str) -> str:
        return f"{self._tag(policy)}:arms"

    def segments(self, policy: str) -> str:
        return f"{self._tag(policy)}:segments"

    def segment_arms(self, policy: str) -> str:
        return f"{self._tag(policy)}:segarms"

    def pending(self, decision_id: str) -> str:
        return f"{self._tag(policy_of(decision_id))}:pending:{decision_id}"

    def tombstone(self, decision_id: str) -> str:
        return f"{self._tag(policy_of(decision_id))}:tomb:{decision_id}"

    def pending_pattern(self, policy: str) -> str:
        return f"{self._tag(policy)}:pending:*"

    def tombstone_pattern(self, policy: str) -> str:
        return f"{self._tag(policy)}:tomb:*"


def version_field(segment: str) -> str:
    return f"v {segment}"


def fingerprint_field(segment: str) -> str:
    return f"f {segment}"


def stamp_field(segment: str, arm: str) -> str:
    return f"a {segment} {arm}"


def arm_of_stamp_field(segment: str, field: str) -> str | None:
    """The arm of `stamp_field(segment, arm)`, or None if `field` is not one of segment's."""
    prefix = f"a {segment} "
    return field[len(prefix) :] if field.startswith(prefix) else None


def sums_field(segment: str, arm: str) -> str:
    return f"{segment} {arm}"


def split_sums_field(field: str) -> tuple[str, str]:
    """(segment, arm) of a sums-hash field."""
    segment, _, arm = field.partition(" ")
    return segment, arm
