"""InMemoryModelStore: the embedded default store (one process), also used by the simulator.

Every method runs to completion without awaiting, so on one event loop each call is atomic:
a decision is settled exactly once. Bounded: at most `max_pending` pending decisions and
`max_tombstones` remembered outcomes (oldest forgotten first, after `tombstone_ttl_s`; kept in
columns by state/tombstones.py, about 190 bytes each).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from banditd.errors import (
    FailedPreconditionError,
    ResourceExhaustedError,
    StateUnavailableError,
    UpdateRefusedError,
    shown,
)
from banditd.feedback.joiner import Verdict, expiry_outcome, join
from banditd.policies import linear
from banditd.policies.linear import ArmState
from banditd.state.tombstones import TombstoneLog
from banditd.types import (
    ArmId,
    DecisionId,
    ModelKey,
    ModelSnapshot,
    ModelSpec,
    Outcome,
    PendingDecision,
    SegmentInfo,
    Settlement,
)


@dataclass(slots=True)
class _Model:
    arms: dict[ArmId, ArmState]
    epochs: dict[ArmId, int]
    fingerprint: str
    version: int = 0


def check_fingerprint(key: ModelKey, stored: str, spec: ModelSpec) -> None:
    """Refuse to score or update a model trained under another feature pipeline."""
    if stored != spec.fingerprint:
        raise FailedPreconditionError(
            f"model {key.policy!r}/{key.segment!r} was trained under feature pipeline"
            f" {stored!r} but the policy now builds {spec.fingerprint!r}; reset the policy"
            " (its state is meaningless under the new features) or restore the old pipeline"
        )


def segment_limit_error(key: ModelKey, spec: ModelSpec, count: int) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"policy {key.policy!r} already has {count} segments, its limit (max_segments ="
        f" {spec.max_segments}); new segment {shown(key.segment)} refused. Raise max_segments,"
        " let idle segments expire (segment_idle_ttl_s), delete unused ones (Admin"
        " DeleteSegment), or set on_segment_limit = 'evict_lru'"
    )


class InMemoryModelStore:
    """ModelStore in a dict. Not shared between processes; lost on restart."""

    concurrent = False  # every call completes without suspending: nothing to overlap

    def __init__(
        self,
        max_pending: int = 1_000_000,
        max_tombstones: int = 1_000_000,
        tombstone_ttl_s: float = 86_400.0,
    ) -> None:
        self._models: dict[ModelKey, _Model] = {}
        # policy -> segment -> last use, least recently used first
        self._segments: dict[str, OrderedDict[str, float]] = {}
        self.evicted_segments = 0  # forgotten at max_segments (evict_lru)
        self.expired_segments = 0  # forgotten after segment_ttl_s unused
        self._pending: dict[DecisionId, PendingDecision] = {}
        self._deadlines: list[tuple[float, DecisionId]] = []
        self._tombstones = TombstoneLog(max_tombstones, tombstone_ttl_s)
        self._max_pending = max_pending
        self.refused_updates = 0  # rewards refused because the model would turn non-finite

    # -- reads ---------------------------------------------------------------------------
    async def load(
        self, key: ModelKey, arms: Sequence[ArmId], spec: ModelSpec, for_route: bool = False
    ) -> ModelSnapshot:
        return self.load_now(key, arms, spec, for_route)

    def load_now(
        self, key: ModelKey, arms: Sequence[ArmId], spec: ModelSpec, for_route: bool = False
    ) -> ModelSnapshot:
        """Synchronous `load` (the simulator's hot loop calls this directly)."""
        if for_route and spec.max_segments and not spec.evict_lru:
            segments = self._segments.get(key.policy)
            if segments and key.segment not in segments and len(segments) >= spec.max_segments:
                raise segment_limit_error(key, spec, len(segments))
        model = self._models.get(key)
        prior = self._prior(spec)
        if model is None:
            return ModelSnapshot(dict.fromkeys(arms, prior), 0)
        check_fingerprint(key, model.fingerprint, spec)
        states = model.arms
        return ModelSnapshot({arm: states.get(arm, prior) for arm in arms}, model.version)

    def _touch(self, key: ModelKey, spec: ModelSpec | None, now: float) -> None:
        """Register the segment's use at `now`; at the limit, with evict_lru, make room."""
        segments = self._segments.get(key.policy)
        if segments is None:
            segments = self._segments[key.policy] = OrderedDict()
        segment = key.segment
        if segment in segments:
            segments[segment] = now
            segments.move_to_end(segment)
            return
        if spec is not None and spec.max_segments and spec.evict_lru:
            while len(segments) >= spec.max_segments:
                oldest, _ = segments.popitem(last=False)
                self._models.pop(ModelKey(key.policy, oldest), None)
                self.evicted_segments += 1
        segments[segment] = now

    def _expire_segments(self, now: float, specs: Mapping[str, ModelSpec]) -> None:
        for policy, segments in self._segments.items():
            spec = specs.get(policy)
            if spec is None or not spec.segment_ttl_s:
                continue
            cutoff = now - spec.segment_ttl_s
            while segments:
                segment, last = next(iter(segments.items()))
                if last >= cutoff:
                    break
                del segments[segment]
                self._models.pop(ModelKey(policy, segment), None)
                self.expired_segments += 1

    async def segments(self, policy: str) -> list[SegmentInfo]:
        out = []
        for segment, last in reversed(self._segments.get(policy, {}).items()):
            model = self._models.get(ModelKey(policy, segment))
            arms, version = (len(model.arms), model.version) if model else (0, 0)
            out.append(SegmentInfo(segment, last, arms, version))
        return out

    async def delete_segment(self, policy: str, segment: str) -> bool:
        segments = self._segments.get(policy)
        registered = segments is not None and segments.pop(segment, None) is not None
        return self._models.pop(ModelKey(policy, segment), None) is not None or registered

    @property
    def segment_count(self) -> int:
        return sum(len(s) for s in self._segments.values())

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def models(self) -> dict[ModelKey, dict[ArmId, ArmState]]:
        """Every stored model's states (admin and tests)."""
        return {key: dict(model.arms) for key, model in self._models.items()}

    # -- writes --------------------------------------------------------------------------
    async def record(self, decision: PendingDecision, spec: ModelSpec | None = None) -> DecisionId:
        self.record_now(decision, spec)
        return decision.decision_id

    def record_now(self, decision: PendingDecision, spec: ModelSpec | None = None) -> None:
        if len(self._pending) >= self._max_pending:
            raise StateUnavailableError(
                f"{len(self._pending)} decisions are pending, the limit of this in-memory store;"
                " send feedback, shorten reward_wait_s or raise store.max_pending"
            )
        self._touch(decision.key, spec, decision.created_at)
        self._pending[decision.decision_id] = decision
        deadlines = self._deadlines
        if len(deadlines) >= 2 * len(self._pending) + 1024:
            self._compact_deadlines()
        heapq.heappush(deadlines, (decision.deadline, decision.decision_id))

    async def settle(
        self, decision_id: DecisionId, reward: float, now: float, spec: ModelSpec
    ) -> Settlement:
        return self.settle_now(decision_id, reward, now, spec)

    def settle_now(
        self, decision_id: DecisionId, reward: float, now: float, spec: ModelSpec
    ) -> Settlement:
        pending = self._pending.get(decision_id)
        # A decision is pending or has a tombstone, never both.
        tomb = None if pending is not None else self._tombstones.get(decision_id)
        verdict = join(pending, tomb, now)
        if verdict is Verdict.APPLY:
            assert pending is not None
            return self._end(pending, Outcome.APPLIED, reward, now, spec)
        if verdict is Verdict.EXPIRE:
            assert pending is not None
            ended = self._end(pending, *expiry_outcome(spec.default_reward), now, spec)
            return Settlement(
                Outcome.EXPIRED, decision_id, ended.arm, ended.policy, ended.segment,
                ended.reward, ended.model_version, pending.deadline,
            )  # fmt: skip
        if tomb is None:
            return Settlement(Outcome.UNKNOWN, decision_id)
        outcome = Outcome.DUPLICATE if verdict is Verdict.DUPLICATE else Outcome.EXPIRED
        return Settlement(
            outcome, decision_id, tomb.arm, reward=tomb.reward,
            model_version=tomb.model_version, settled_at=tomb.settled_at,
        )  # fmt: skip

    async def expire(
        self, now: float, limit: int, specs: Mapping[str, ModelSpec]
    ) -> list[Settlement]:
        return self.expire_now(now, limit, specs)

    def expire_now(
        self, now: float, limit: int, specs: Mapping[str, ModelSpec]
    ) -> list[Settlement]:
        done: list[Settlement] = []
        while self._deadlines and len(done) < limit and self._deadlines[0][0] < now:
            _, decision_id = heapq.heappop(self._deadlines)
            pending = self._pending.get(decision_id)
            if pending is None:
                continue  # already settled by feedback
            spec = specs.get(pending.policy)
            if spec is None:  # policy removed since: nothing to update
                del self._pending[decision_id]
                done.append(Settlement(Outcome.DROPPED, decision_id, pending.arm, pending.policy,
                                       pending.segment, None, 0, now))  # fmt: skip
                continue
            outcome, reward = expiry_outcome(spec.default_reward)
            try:
                done.append(self._end(pending, outcome, reward, now, spec))
            except FailedPreconditionError:  # the model refuses it (pipeline, finiteness)
                # Dropped, not retried: the sweeper would meet the same refusal forever.
                done.append(self._end(pending, Outcome.DROPPED, None, now, spec))
        self._tombstones.prune(now)
        self._expire_segments(now, specs)
        return done

    async def close(self) -> None:
        return None

    # -- internals -----------------------------------------------------------------------
    def _prior(self, spec: ModelSpec) -> ArmState:
        return linear.shared_prior(spec.dim, spec.l2)

    def _end(
        self,
        pending: PendingDecision,
        outcome: Outcome,
        reward: float | None,
        now: float,
        spec: ModelSpec,
    ) -> Settlement:
        """Apply a pending decision's reward (if any), remove it, leave a tombstone.

        If the update is refused (e.g. FailedPreconditionError), the decision stays pending.
        """
        if reward is not None:
            version = self._apply(pending, reward, now, spec)
        else:
            model = self._models.get(pending.key)
            version = model.version if model else 0
        del self._pending[pending.decision_id]
        self._tombstones.add(pending.decision_id, outcome, pending.arm, reward, now, version)
        return Settlement(outcome, pending.decision_id, pending.arm, pending.policy,
                          pending.segment, reward, version, now)  # fmt: skip

    def _apply(self, pending: PendingDecision, reward: float, now: float, spec: ModelSpec) -> int:
        """Add the reward to its arm; every check runs before anything is changed."""
        model = self._models.get(pending.key)
        if model is not None:
            check_fingerprint(pending.key, model.fingerprint, spec)
        arm = pending.state_arm
        state = (model.arms.get(arm) if model else None) or self._prior(spec)
        if state.dim != pending.x.shape[0]:
            raise FailedPreconditionError(
                f"model {pending.key} arm {arm!r} has dimension {state.dim} but the"
                f" decision's vector has {pending.x.shape[0]}; was the policy's pipeline changed?"
            )
        epoch = math.floor(now / spec.decay_interval_s)
        try:
            if spec.decay_factor < 1.0 and model is not None:
                last = model.epochs.get(arm, epoch)
                if epoch > last:
                    state = linear.decay(state, spec.decay_factor ** (epoch - last))
            updated = linear.update(state, pending.x, reward)
        except linear.UnsafeUpdateError as exc:
            self.refused_updates += 1
            raise UpdateRefusedError(
                f"model {pending.key.policy!r}/{pending.key.segment!r} arm {arm!r} cannot take"
                f" decision {pending.decision_id!r}'s reward {reward:g}: {exc}; nothing was"
                " changed and the decision stays pending"
            ) from None
        if model is None:
            model = self._models[pending.key] = _Model({}, {}, spec.fingerprint)
            # A decision of a segment forgotten since it was routed: registered again.
            self._segments.setdefault(pending.policy, OrderedDict()).setdefault(
                pending.segment, now
            )
        if spec.decay_factor < 1.0:
            model.epochs[arm] = epoch
        model.arms[arm] = updated
        model.version += 1
        return model.version

    def _compact_deadlines(self) -> None:
        """Drop the heap entries of decisions already settled by feedback (in place).

        Feedback leaves a decision's entry in the heap (removing it would cost O(n)); without
        this, the heap would hold one entry per decision of the last reward_wait_s, however
        few are pending. Run when at least half the heap is stale, so it costs O(1) amortised
        per Route and the heap stays under 2 × pending + 1024 entries.
        """
        pending = self._pending
        self._deadlines[:] = [entry for entry in self._deadlines if entry[1] in pending]
        heapq.heapify(self._deadlines)

    @property
    def deadline_entries(self) -> int:
        """Entries in the expiry heap (pending decisions plus not yet compacted settled ones)."""
        return len(self._deadlines)

    # -- admin ---------------------------------------------------------------------------
    def reset(self, policy: str) -> int:
        """Forget every model of a policy; returns how many (policy, segment) models went."""
        keys = [key for key in self._models if key.policy == policy]
        for key in keys:
            del self._models[key]
        self._segments.pop(policy, None)
        return len(keys)
