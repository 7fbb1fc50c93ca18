"""TombstoneLog behaves as the OrderedDict of Tombstones it replaced, in far fewer bytes."""

from __future__ import annotations

import secrets
import tracemalloc
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditd.feedback.joiner import Tombstone
from banditd.state.tombstones import TombstoneLog
from banditd.types import Outcome


class Reference:
    """The in-memory store's tombstones before TombstoneLog (stop 10), as the oracle."""

    def __init__(self, cap: int, ttl_s: float) -> None:
        self.d: OrderedDict[str, Tombstone] = OrderedDict()
        self.cap, self.ttl_s = cap, ttl_s

    def add(self, t: Tombstone) -> None:
        if t.decision_id in self.d:
            return
        self.d[t.decision_id] = t
        if len(self.d) > self.cap:
            self.d.popitem(last=False)

    def prune(self, now: float) -> None:
        while self.d and next(iter(self.d.values())).settled_at < now - self.ttl_s:
            self.d.popitem(last=False)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 40), st.sampled_from(list(Outcome)),
                  st.sampled_from(["a", "b", "arm-c"]),
                  st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)),
                  st.integers(0, 2**62)),
        st.tuples(st.just("prune")),
        st.tuples(st.just("tick"), st.floats(0.0, 5.0)),
    ),
    max_size=120,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(ops=ops, cap=st.integers(1, 12), ttl_s=st.floats(0.5, 20.0))
def test_log_matches_the_ordered_dict_it_replaced(ops, cap: int, ttl_s: float):
    """Random adds (repeated ids included), prunes and clock ticks: same answers for every id,
    same size, through many wraps of the ring."""
    log, ref, now = TombstoneLog(cap, ttl_s), Reference(cap, ttl_s), 1000.0
    for op in ops:
        if op[0] == "add":
            _, i, outcome, arm, reward, version = op
            t = Tombstone(f"p:{i}", outcome, arm, reward, now, version)
            log.add(t.decision_id, outcome, arm, reward, now, version)
            ref.add(t)
        elif op[0] == "prune":
            log.prune(now)
            ref.prune(now)
        else:
            now += op[1]
        assert len(log) == len(ref.d)
    for i in range(41):
        assert log.get(f"p:{i}") == ref.d.get(f"p:{i}")
        assert (f"p:{i}" in log) == (f"p:{i}" in ref.d)


def test_log_refuses_an_empty_cap():
    with pytest.raises(ValueError, match="max_entries"):
        TombstoneLog(0, 1.0)


def _bytes_per_entry(fill) -> float:  # type: ignore[no-untyped-def]
    n = 50_000
    ids = [f"chat:{secrets.token_hex(12)}" for _ in range(n)]  # the ids exist either way
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = fill(ids)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert keep is not None
    return (after - before) / n


def _columns(ids: list[str]) -> object:
    log = TombstoneLog(1_000_000, 86_400.0)
    for i, d in enumerate(ids):
        log.add(d, Outcome.APPLIED, "a", 0.25 + i * 1e-9, 1e9 + i * 1e-3, 10_000 + i)
    return log


def _objects(ids: list[str]) -> object:
    ref = Reference(1_000_000, 86_400.0)
    for i, d in enumerate(ids):
        ref.add(Tombstone(d, Outcome.APPLIED, "a", 0.25 + i * 1e-9, 1e9 + i * 1e-3, 10_000 + i))
    return ref


def test_log_takes_far_fewer_bytes_than_one_object_per_tombstone():
    """Measured side by side: the columns and the slot map against the OrderedDict of frozen
    Tombstones, each holding 50k ended decisions (ids allocated outside the measurement)."""
    new, old = _bytes_per_entry(_columns), _bytes_per_entry(_objects)
    assert new < 0.6 * old, (new, old)


if __name__ == "__main__":  # python -m tests.unit.state.test_tombstones: the figures docs quote
    import sys

    ids = f"chat:{secrets.token_hex(12)}"
    key = sys.getsizeof(ids)  # each id string, kept by either structure
    new, old = _bytes_per_entry(_columns), _bytes_per_entry(_objects)
    print(f"bytes per ended decision, excluding / including its {key} B id string:")
    print(f"  TombstoneLog (columns + slot map)   {new:6.0f} / {new + key:4.0f}")
    print(f"  OrderedDict of Tombstone objects    {old:6.0f} / {old + key:4.0f}")
