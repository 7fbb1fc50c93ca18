"""Decision ids. PURE.

    <policy>:<tag>-<24 hex>                issued by Route (96 random bits); <tag> is the
                                           decision's segment tag (3 hex, `segment_tag`)
    <policy>:<24 hex>                      issued before segment tags (one hash tag per
                                           policy), or with store.redis.key_layout = "policy"
    <id>.b<hex seconds>                    either form, issued while the shared store was
                                           unreachable: the decision waits in the routing
                                           replica's outage buffer, stamped with the Unix
                                           second it was buffered

The policy and tag parts route a Feedback to its keys (a Redis Cluster hash tag per
(policy, segment tag), banditd/state/keys.py). The buffered form lets every other replica tell
"not in the store yet" from "never issued": for such an id it answers UNAVAILABLE (retry)
instead of NOT_FOUND until the routing replica must have flushed it or given it up
(docs/redis.md, "Outage buffer").
"""

from __future__ import annotations

import re
import secrets
import zlib

BUFFERED = ".b"
MAX_ID_CHARS = 128  # a policy name (64) + ':' + tag + 24 hex + '.b' + seconds, with room to spare
TAG_BITS = 12  # 4,096 tags: a policy's segments spread over up to that many Cluster slots
_TAGGED = re.compile(r"[0-9a-f]{3}-")


def segment_tag(segment: str) -> str:
    """The segment's tag: the low 12 bits of the CRC-32 of its UTF-8 bytes, as 3 hex digits.

    Stable forever (stored state and issued decision ids carry it). Two segments may share a
    tag; they then share a Redis Cluster slot, which is harmless."""
    return f"{zlib.crc32(segment.encode()) & ((1 << TAG_BITS) - 1):03x}"


def new_decision_id(policy: str, segment: str = "") -> str:
    return f"{policy}:{segment_tag(segment)}-{secrets.token_hex(12)}"


def untagged_decision_id(policy: str, segment: str = "") -> str:
    """An id without a segment tag (store.redis.key_layout = "policy": a rolling upgrade from
    a version whose replicas name every key of a policy by the policy alone)."""
    return f"{policy}:{secrets.token_hex(12)}"


def tag_of(decision_id: str) -> str | None:
    """The segment tag a decision id carries, or None (an id of the untagged form)."""
    _, _, rest = decision_id.rpartition(":")
    return rest[:3] if _TAGGED.match(rest) else None


def buffered_id(decision_id: str, at: float) -> str:
    """The id of a decision that went to the outage buffer at Unix time `at`."""
    return f"{decision_id}{BUFFERED}{max(int(at), 0):x}"


def plain_id(decision_id: str) -> str:
    """The id a buffered decision was first recorded under (any other id: itself)."""
    if buffered_at(decision_id) is None:
        return decision_id
    return decision_id.rpartition(BUFFERED)[0]


def buffered_at(decision_id: str) -> float | None:
    """When a buffered decision was buffered (Unix seconds), or None for any other id."""
    _, _, rest = decision_id.rpartition(":")
    head, sep, stamp = rest.rpartition(BUFFERED)
    if not sep or not head or not stamp or len(stamp) > 12:
        return None
    try:
        return float(int(stamp, 16))
    except ValueError:
        return None
