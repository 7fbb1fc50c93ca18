"""Decision ids. PURE.

    <policy>:<24 hex>                 issued by Route (96 random bits)
    <policy>:<24 hex>.b<hex seconds>  issued while the shared store was unreachable: the
                                      decision waits in the routing replica's outage buffer,
                                      stamped with the Unix second it was buffered

The policy part routes a Feedback to its keys (a Redis Cluster hash tag). The buffered form
lets every other replica tell "not in the store yet" from "never issued": for such an id it
answers UNAVAILABLE (retry) instead of NOT_FOUND until the routing replica must have flushed
it or given it up (docs/redis.md, "Outage buffer").
"""

from __future__ import annotations

import secrets

BUFFERED = ".b"
MAX_ID_CHARS = 128  # a policy name (64) + ':' + 24 hex + '.b' + seconds, with room to spare


def new_decision_id(policy: str) -> str:
    return f"{policy}:{secrets.token_hex(12)}"


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
