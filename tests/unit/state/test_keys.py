"""Key names: every key of a policy carries the policy's Cluster hash tag."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@given(policies, hexes)
def test_all_keys_of_a_decision_share_its_policy_slot(policy: str, hexid: str):
    """Settle's five keys hash to one slot, derivable from the decision id alone."""
    k = keys.Keys("banditd")
    decision_id = f"{policy}:{hexid}"
    names = [k.pending(decision_id), k.tombstone(decision_id), k.model(policy), k.sums(policy),
             k.deadlines(policy), k.arms(policy)]  # fmt: skip
    assert {hash_tag(n) for n in names} == {policy}


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
