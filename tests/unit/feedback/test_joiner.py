"""The pure join table for delayed rewards."""

from __future__ import annotations

import numpy as np
import pytest

from banditd.feedback.joiner import Tombstone, Verdict, expiry_outcome, join
from banditd.types import Outcome, PendingDecision

PENDING = PendingDecision("p:1", "p", "", "a", np.ones(2), 1.0, 0, 100.0, 160.0)


@pytest.mark.parametrize(
    ("pending", "tombstone", "now", "verdict"),
    [
        (PENDING, None, 100.0, Verdict.APPLY),
        (PENDING, None, 160.0, Verdict.APPLY),  # the deadline itself is still in time
        (PENDING, None, 160.001, Verdict.EXPIRE),
        (None, None, 120.0, Verdict.UNKNOWN),
        (None, Tombstone("p:1", Outcome.APPLIED, "a", 1.0, 110.0, 3), 120.0, Verdict.DUPLICATE),
        (None, Tombstone("p:1", Outcome.DEFAULTED, "a", 0.0, 161.0, 3), 170.0, Verdict.EXPIRED),
        (None, Tombstone("p:1", Outcome.DROPPED, "a", None, 161.0, 3), 170.0, Verdict.EXPIRED),
    ],
)
def test_join_table(
    pending: PendingDecision | None, tombstone: Tombstone | None, now: float, verdict: Verdict
) -> None:
    """Each (pending, tombstone, time) combination has exactly one verdict."""
    assert join(pending, tombstone, now) is verdict


def test_expiry_applies_default_or_drops() -> None:
    """A default reward means DEFAULTED with that reward; None means DROPPED."""
    assert expiry_outcome(0.25) == (Outcome.DEFAULTED, 0.25)
    assert expiry_outcome(None) == (Outcome.DROPPED, None)
