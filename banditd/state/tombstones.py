"""TombstoneLog: the in-memory store's remembered outcomes, in columns. PURE: stdlib only.

A tombstone answers a second Feedback (DUPLICATE) or a late one (EXPIRED) for a decision that
has ended. The in-memory store keeps up to `max_entries` of them (1M by default), oldest
forgotten first, and none older than `ttl_s`. As one frozen `Tombstone` per decision in an
OrderedDict that cost about 330 bytes each (330 MB at the cap, in a sidecar); here each ended
decision costs its dict entry, a slot number, and one row of typed columns that grow with use
up to the cap and are then reused as a ring (about 190 bytes each; `python -m
tests.unit.state.test_tombstones` measures both). A `Tombstone` is built only when one is looked up.
"""

from __future__ import annotations

import math
from array import array

from banditd.feedback.joiner import Tombstone
from banditd.types import ArmId, DecisionId, Outcome

_OUTCOMES = tuple(Outcome)
_CODE = {outcome: code for code, outcome in enumerate(_OUTCOMES)}


class TombstoneLog:
    """Ended decisions in the order they ended; `get` by id, `prune` by age, bounded size."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._cap = max_entries
        self._ttl_s = ttl_s
        self._slots: dict[DecisionId, int] = {}  # id -> sequence number (slot = seq % cap)
        self._head = 0  # sequence number of the oldest entry
        self._next = 0  # sequence number of the next entry
        self._ids: list[DecisionId] = []
        self._settled_at = array("d")
        self._reward = array("d")  # NaN: no reward (dropped)
        self._version = array("q")
        self._outcome = array("b")
        self._arm = array("i")  # index into _arm_names
        self._arm_index: dict[ArmId, int] = {}
        self._arm_names: list[ArmId] = []

    def __len__(self) -> int:
        return self._next - self._head

    def __contains__(self, decision_id: object) -> bool:
        return decision_id in self._slots

    def add(
        self,
        decision_id: DecisionId,
        outcome: Outcome,
        arm: ArmId,
        reward: float | None,
        settled_at: float,
        model_version: int,
    ) -> None:
        """Remember an ended decision (the oldest is forgotten once the log is full).

        An id already in the log keeps its first entry: a decision ends once."""
        if decision_id in self._slots:
            return
        if len(self) == self._cap:
            self._drop_oldest()
        arm_code = self._arm_index.get(arm)
        if arm_code is None:
            arm_code = self._arm_index[arm] = len(self._arm_names)
            self._arm_names.append(arm)
        seq = self._next
        value = math.nan if reward is None else reward
        if seq < self._cap:  # still growing
            self._ids.append(decision_id)
            self._settled_at.append(settled_at)
            self._reward.append(value)
            self._version.append(model_version)
            self._outcome.append(_CODE[outcome])
            self._arm.append(arm_code)
        else:  # a ring: slot seq % cap held entry seq - cap, already forgotten
            slot = seq % self._cap
            self._ids[slot] = decision_id
            self._settled_at[slot] = settled_at
            self._reward[slot] = value
            self._version[slot] = model_version
            self._outcome[slot] = _CODE[outcome]
            self._arm[slot] = arm_code
        self._slots[decision_id] = seq
        self._next = seq + 1

    def get(self, decision_id: DecisionId) -> Tombstone | None:
        seq = self._slots.get(decision_id)
        if seq is None:
            return None
        slot = seq % self._cap
        reward = self._reward[slot]
        return Tombstone(
            decision_id, _OUTCOMES[self._outcome[slot]], self._arm_names[self._arm[slot]],
            None if math.isnan(reward) else reward, self._settled_at[slot], self._version[slot],
        )  # fmt: skip

    def prune(self, now: float) -> None:
        """Forget entries that ended more than ttl_s before `now` (oldest first)."""
        horizon = now - self._ttl_s
        while self._head < self._next and self._settled_at[self._head % self._cap] < horizon:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        slot = self._head % self._cap
        del self._slots[self._ids[slot]]
        self._ids[slot] = ""  # the id's string can go now, not when the slot is reused
        self._head += 1
