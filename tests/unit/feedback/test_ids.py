"""Decision ids: the buffered form and back (banditd/feedback/ids.py)."""

from __future__ import annotations

import pytest

from banditd.feedback import ids


@pytest.mark.parametrize("policy", ["chat", "a.b", "x.b1"])
def test_plain_id_undoes_buffered_id(policy: str) -> None:
    """A buffered id leads back to the id Route first tried to record; other ids to themselves."""
    plain = ids.new_decision_id(policy)
    buffered = ids.buffered_id(plain, 1_700_000_000.0)
    assert ids.buffered_at(buffered) == 1_700_000_000.0
    assert ids.plain_id(buffered) == plain
    assert ids.plain_id(plain) == plain
    assert ids.buffered_at(plain) is None
