"""Decision ids: the buffered form and back (banditd/feedback/ids.py)."""

from __future__ import annotations

import pytest

from banditd.feedback import ids


@pytest.mark.parametrize("policy", ["chat", "a.b", "x.b1"])
@pytest.mark.parametrize("new_id", [ids.new_decision_id, ids.untagged_decision_id])
def test_plain_id_undoes_buffered_id(policy: str, new_id) -> None:
    """A buffered id leads back to the id Route first tried to record; other ids to themselves."""
    plain = new_id(policy, "b.seg")
    buffered = ids.buffered_id(plain, 1_700_000_000.0)
    assert ids.buffered_at(buffered) == 1_700_000_000.0
    assert ids.plain_id(buffered) == plain
    assert ids.plain_id(plain) == plain
    assert ids.buffered_at(plain) is None


def test_segment_tags_never_change() -> None:
    """Stored state and issued ids carry the tag: its function is fixed forever (CRC-32)."""
    assert [ids.segment_tag(s) for s in ("", "s1", "tenant-1", "é")] == [
        "000", "8f0", "9ff", "d3e"]  # fmt: skip


@pytest.mark.parametrize("segment", ["", "s1", "b.1", "a" * 128])
def test_a_decision_id_carries_its_segment_tag(segment: str) -> None:
    """The tag survives the buffered form; untagged ids (and other strings) have none."""
    decision_id = ids.new_decision_id("chat", segment)
    tag = ids.segment_tag(segment)
    assert ids.tag_of(decision_id) == tag
    assert ids.tag_of(ids.buffered_id(decision_id, 1_700_000_000.0)) == tag
    for other in (ids.untagged_decision_id("chat"), "chat:abc", "chat:ABC-1", "chat:", "x"):
        assert ids.tag_of(other) is None
