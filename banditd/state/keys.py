"""Every Redis key and hash-field name banditd uses, and nowhere else. PURE.

A policy's state is spread over Redis Cluster hash slots by segment: each (policy, segment
tag) pair is one slot, `{<policy>/<tag>}`, where the tag is 3 hex digits of a hash of the
segment name (banditd/feedback/ids.py `segment_tag`; segments sharing a tag share a slot).
A Lua script touches one slot only, so everything one decision's join needs (its pending and
tombstone hashes, its segment's sums, model fields and deadline index) lives in the slot of
its segment, and the decision id carries the tag (`<policy>:<tag>-<hex>`), so a Feedback's
keys follow from its id alone. What spans a policy's segments (the segment registry, the
runtime arm list, the set of tags in use) lives in the policy's own slot `{<policy>}`, which
the store updates in separate calls (docs/redis.md, "Key layout").

Policy names match [A-Za-z0-9_.-]{1,64} and the prefix may not contain braces, so a hash
tag is always exactly `<policy>` or `<policy>/<tag>`. Per-slot keys, with `<slot>` standing
for `<prefix>:{<policy>/<tag>}`:

    <slot>:model                   HASH  per-slot metadata (fields below)
    <slot>:sums                    HASH  "<segment> <arm>" -> codec sums blob (S, b, n, ...)
    <slot>:deadlines               ZSET  decision id scored by its deadline (unix s)
    <slot>:pending:<id>            HASH  one pending decision (PENDING_FIELDS), TTL
    <slot>:tomb:<id>               HASH  how a decision ended (TOMB_FIELDS), TTL
    <slot>:segarms                 HASH  segment -> its sums fields, '\n'-separated

Policy-wide keys, in the policy's slot `<prefix>:{<policy>}`:

    <prefix>:{<policy>}:segments   ZSET  segment -> last use (unix s): the segment registry
                                         (segment limit, idle expiry, ListSegments)
    <prefix>:{<policy>}:arms       SET   runtime arm list set by the Admin service
    <prefix>:{<policy>}:tags       SET   segment tags that ever held a decision or state (the
                                         expiry sweep and the Admin visit these slots)

Global: `<prefix>:policies` (SET, policies that ever recorded a decision), `<prefix>:layout`
(STRING, "segment" once the migration below has run) and `<prefix>:layout-lock`.

The policy's own slot is also the *legacy* slot: before segment tags, every key above lived
there (`<prefix>:{<policy>}:model` etc.), and decision ids had no tag (`<policy>:<hex>`).
The migration (banditd/state/layout.py) moves the learned state to the per-segment slots;
untagged decisions stay pending in the legacy slot and are moved to their segment's slot
when they settle. With key_layout = "policy" (`Keys(per_segment=False)`) every slot is the
legacy slot: the old layout, for a rolling upgrade.

Fields of a slot's model hash (segments and arm ids contain no whitespace, so a space
separates):

    "c"                    the slot's apply counter; never reset (stamps cached arm states)
    "v <segment>"          model version of (policy, segment): updates applied since reset
    "f <segment>"          fingerprint of the feature pipeline the model was built under
    "a <segment> <arm>"    stamp (value of "c") of the arm's last change
"""

from __future__ import annotations

import re
from typing import NewType

from banditd.feedback import ids
from banditd.types import POLICY_NAME

DEFAULT_PREFIX = "banditd"
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

Slot = NewType("Slot", str)  # "<prefix>:{<policy>}" or "<prefix>:{<policy>/<tag>}"

COUNTER_FIELD = "c"
LAYOUT_SEGMENT = "segment"  # the value of <prefix>:layout once the state is per segment
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
    """The policy a decision id belongs to (`<policy>:...`); ValueError if it has none."""
    policy, sep, rest = decision_id.rpartition(":")
    if not sep or not rest or not POLICY_NAME.fullmatch(policy):
        raise ValueError(f"decision id {decision_id[:80]!r} has no policy part")
    return policy


class Keys:
    """Key names under one prefix. per_segment=False: every key of a policy in its own slot
    (key_layout = "policy")."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, per_segment: bool = True) -> None:
        self.prefix = check_prefix(prefix)
        self.per_segment = per_segment

    # -- slots -----------------------------------------------------------------------------
    def legacy(self, policy: str) -> Slot:
        """The policy's own slot: policy-wide keys, and all keys before segment tags."""
        if not POLICY_NAME.fullmatch(policy):
            raise ValueError(f"policy name {policy[:80]!r} must match {POLICY_NAME.pattern}")
        return Slot(f"{self.prefix}:{{{policy}}}")

    def slot(self, policy: str, tag: str | None) -> Slot:
        """The slot of a segment tag (None: the legacy slot)."""
        if tag is None or not self.per_segment:
            return self.legacy(policy)
        return Slot(f"{self.legacy(policy)[:-1]}/{tag}}}")

    def segment_slot(self, policy: str, segment: str) -> Slot:
        """Where the state of (policy, segment) lives."""
        return self.slot(policy, ids.segment_tag(segment))

    def decision_slot(self, decision_id: str) -> Slot:
        """Where a decision is pending: its tag's slot; the legacy slot for an untagged id."""
        return self.slot(policy_of(decision_id), ids.tag_of(decision_id))

    def is_legacy_id(self, decision_id: str) -> bool:
        """An untagged id whose decision does not live where its segment's state does."""
        return self.per_segment and ids.tag_of(decision_id) is None

    # -- global and policy-wide ------------------------------------------------------------
    def policies(self) -> str:
        return f"{self.prefix}:policies"

    def layout(self) -> str:
        return f"{self.prefix}:layout"

    def layout_lock(self) -> str:
        return f"{self.prefix}:layout-lock"

    def arms(self, policy: str) -> str:
        return f"{self.legacy(policy)}:arms"

    def segments(self, policy: str) -> str:
        return f"{self.legacy(policy)}:segments"

    def tags(self, policy: str) -> str:
        return f"{self.legacy(policy)}:tags"

    # -- per slot --------------------------------------------------------------------------
    def model(self, slot: Slot) -> str:
        return f"{slot}:model"

    def sums(self, slot: Slot) -> str:
        return f"{slot}:sums"

    def deadlines(self, slot: Slot) -> str:
        return f"{slot}:deadlines"

    def segment_arms(self, slot: Slot) -> str:
        return f"{slot}:segarms"

    def pending(self, decision_id: str, slot: Slot | None = None) -> str:
        return f"{slot or self.decision_slot(decision_id)}:pending:{decision_id}"

    def tombstone(self, decision_id: str, slot: Slot | None = None) -> str:
        return f"{slot or self.decision_slot(decision_id)}:tomb:{decision_id}"

    def pending_patterns(self, policy: str) -> list[str]:
        """SCAN patterns of every pending hash of the policy (legacy slot, then the tags')."""
        return [f"{self.legacy(policy)}:pending:*", f"{self.legacy(policy)[:-1]}/*}}:pending:*"]

    def tombstone_patterns(self, policy: str) -> list[str]:
        return [f"{self.legacy(policy)}:tomb:*", f"{self.legacy(policy)[:-1]}/*}}:tomb:*"]


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
