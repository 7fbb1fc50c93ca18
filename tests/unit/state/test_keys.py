"""Key names: a decision's keys share its (policy, segment tag) slot; policy-wide keys the
policy's own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banditd.feedback import ids
from banditd.state import keys

policies = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
hexes = st.from_regex(r"[0-9a-f]{1,24}", fullmatch=True)


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes (the rule from the cluster spec)."""
    start = key.find("{")
    if start < 0:
        return key
    end = key.find("}", start + 1)
    return key if end <= start + 1 else key[start + 1 : end]


segments = st.text(st.characters(blacklist_categories=("Cc", "Zs")), max_size=40)


@given(policies, segments, hexes)
def test_the_keys_of_a_decision_join_share_its_segment_slot(policy: str, segment: str, hexid: str):
    """Settle's keys hash to one slot, named by the decision id alone (its policy and segment
    tag), which is also where the segment's state lives."""
    k = keys.Keys("banditd")
    decision_id = f"{policy}:{ids.segment_tag(segment)}-{hexid}"
    slot = k.decision_slot(decision_id)
    assert slot == k.segment_slot(policy, segment)
    names = [k.pending(decision_id), k.tombstone(decision_id), k.model(slot), k.sums(slot),
             k.deadlines(slot), k.segment_arms(slot)]  # fmt: skip
    assert {hash_tag(n) for n in names} == {f"{policy}/{ids.segment_tag(segment)}"}
    assert {hash_tag(n) for n in (k.segments(policy), k.arms(policy), k.tags(policy))} == {policy}


@given(policies, segments, hexes)
def test_untagged_ids_and_the_policy_layout_use_the_policy_slot(
    policy: str, segment: str, hexid: str
):
    """An id of the form before segment tags is pending in the policy's own slot; with
    key_layout = "policy" every key is there, tagged id or not (the layout before tags)."""
    k, old = keys.Keys("banditd"), keys.Keys("banditd", per_segment=False)
    untagged, tagged = f"{policy}:{hexid}", f"{policy}:{ids.segment_tag(segment)}-{hexid}"
    assert k.is_legacy_id(untagged)
    assert not k.is_legacy_id(tagged)
    assert hash_tag(k.pending(untagged)) == policy
    assert not old.is_legacy_id(untagged)
    names = [old.pending(tagged), old.model(old.segment_slot(policy, segment)),
             old.segments(policy)]  # fmt: skip
    assert {hash_tag(n) for n in names} == {policy}
    assert old.model(old.segment_slot(policy, segment)) == f"banditd:{{{policy}}}:model"


def test_decision_id_without_policy_is_rejected():
    """Ids not of the form <policy>:<hex> name no keys."""
    with pytest.raises(ValueError, match="no policy"):
        keys.policy_of("deadbeef")


def test_prefix_with_braces_is_rejected():
    """A brace in the prefix would move the hash tag off the policy name."""
    with pytest.raises(ValueError, match="prefix"):
        keys.Keys("bad{x}")


def test_sums_field_splits_back_into_segment_and_arm():
    """Segments and arms contain no spaces, so one space separates them."""
    assert keys.split_sums_field(keys.sums_field("tenant-1", "gpt:4o")) == ("tenant-1", "gpt:4o")
    assert keys.split_sums_field(keys.sums_field("", "a")) == ("", "a")
