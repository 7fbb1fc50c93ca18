"""The application core: Route and Feedback over the ports in banditd/types.py.

No grpc, redis or onnxruntime types here. The server (server/service.py) and the simulator
(sim/replay.py) drive the same Router, so offline replays run the daemon's own decision code.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from banditd.cache.pager import Pager, PagingAdvice
from banditd.errors import (
    BanditdError,
    ConfigError,
    DecisionExpiredError,
    DecisionNotFoundError,
    FailedPreconditionError,
    InvalidRequestError,
    ResourceExhaustedError,
    UnknownPolicyError,
    shown,
)
from banditd.feedback.ids import MAX_ID_CHARS, new_decision_id
from banditd.feedback.window import WindowWarning, WindowWatch
from banditd.policies import linear, linucb, thompson
from banditd.policies.choice import Choice, zeros
from banditd.policies.linear import ArmState, Stack, Vector, interaction
from banditd.policies.spec import PolicyConfig
from banditd.types import (
    POLICY_NAME,
    ArmId,
    Candidate,
    Clock,
    Context,
    FeatureExtractor,
    ModelKey,
    ModelSpec,
    ModelStore,
    Outcome,
    PendingDecision,
    Settlement,
    TraceSink,
)

ARM_ID = re.compile(r"^[^\s\x00-\x1f]{1,128}$")
SEGMENT = re.compile(r"^[^\s\x00-\x1f]{0,128}$")
SHARED_ARM = "*"  # the store key of a shared model's single state
MAX_STACKS = 4096  # cached stacked states (one per (model, candidate list)); oldest dropped
MAX_STACK_BYTES = 32 << 20  # and at most this much of them (d=32, K=16: 135 kB each)
_NOT_YET = BanditdError("not settled yet")  # feedback_many's placeholder, always replaced


@dataclass(frozen=True, slots=True)
class RouteResult:
    decision_id: str
    arm: ArmId
    propensity: float
    candidates: tuple[ArmId, ...]
    choice: Choice
    pulls: tuple[int, ...]
    model_version: int
    algorithm: str
    degraded: bool
    fingerprint: str
    deadline: float
    paging: PagingAdvice | None = None  # set when the policy pages adapters on `replica`


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    outcome: Outcome  # APPLIED or DUPLICATE
    arm: ArmId
    reward: float
    model_version: int
    policy: str


@dataclass(frozen=True, slots=True)
class _Policy:
    config: PolicyConfig
    extractor: FeatureExtractor
    spec: ModelSpec
    params: linucb.LinUCBParams | thompson.ThompsonParams
    arms: frozenset[ArmId]


def model_spec(policy: PolicyConfig, dim: int, fingerprint: str = "") -> ModelSpec:
    """What the store needs to know of a policy whose update vectors have length `dim`."""
    return ModelSpec(
        dim=dim,
        l2=policy.l2,
        decay_factor=policy.decay_factor,
        decay_interval_s=policy.decay_interval_s,
        default_reward=policy.default_reward,
        fingerprint=f"{policy.model}:{policy.arm_features}:{fingerprint}",
        max_segments=policy.max_segments,
        evict_lru=policy.evict_lru,
        segment_ttl_s=policy.segment_ttl_s,
        reward_wait_s=policy.reward_wait_s,
    )


def policy_of(decision_id: str) -> str:
    policy, sep, rest = decision_id.rpartition(":")
    if not sep or not policy or not rest or len(decision_id) > MAX_ID_CHARS:
        raise InvalidRequestError(
            f"decision_id {shown(decision_id)} is not one this daemon issued (expected"
            " '<policy>:<hex>' as returned by Route)"
        )
    return policy


class Router:
    """Decides, logs pending decisions, and joins rewards to them."""

    def __init__(
        self,
        policies: Mapping[str, PolicyConfig],
        extractor_for: Callable[[PolicyConfig], FeatureExtractor],
        store: ModelStore,
        clock: Clock,
        rng: np.random.Generator,
        trace: TraceSink | None = None,
        template: PolicyConfig | None = None,
        new_id: Callable[[str, str], str] = new_decision_id,
        pager: Pager | None = None,
        max_auto_policies: int = 100,
    ) -> None:
        self._extractor_for = extractor_for
        self._policies = {name: self._build(cfg) for name, cfg in policies.items()}
        self._store = store
        self._clock = clock
        self._rng = rng
        self._trace = trace
        self._template = template
        self._max_auto_policies = max_auto_policies
        self._auto_created = 0
        self._new_arms: dict[str, set[ArmId]] = {}  # per policy: arms added by allow_new_arms
        self.window = WindowWatch()  # are rewards coming after their window? (daemon warns)
        self._new_id = new_id
        self._pager = pager
        self._clipped: dict[str, int] = {}  # out-of-range prices/arm features clipped
        self.nonfinite_routes = 0  # Routes refused because a model gave non-finite scores
        self._stack_bytes = 0
        self._stacks: dict[
            tuple[ModelKey, tuple[ArmId, ...]],
            tuple[tuple[ArmState, ...], Stack, tuple[int, ...]],
        ] = {}

    # -- policies ------------------------------------------------------------------------
    def _build(self, config: PolicyConfig) -> _Policy:
        for arm in config.arms:
            if not ARM_ID.match(arm):
                raise ConfigError(
                    f"policy {config.name!r}: arm id {arm!r} must be 1-128 printable"
                    " non-space characters"
                )
        extractor = self._extractor_for(config)
        dim = (
            extractor.dim * (1 + config.arm_features) if config.model == "shared" else extractor.dim
        )
        params: linucb.LinUCBParams | thompson.ThompsonParams
        if config.algorithm == "linucb":
            params = linucb.LinUCBParams(config.alpha, config.l2, config.epsilon)
        else:
            params = thompson.ThompsonParams(config.v, config.l2, config.epsilon)
        spec = model_spec(config, dim, extractor.fingerprint)
        return _Policy(config, extractor, spec, params, frozenset(config.arms))

    def policy(self, name: str) -> PolicyConfig:
        return self._resolve(name).config

    @property
    def policy_names(self) -> list[str]:
        return sorted(self._policies)

    def arms(self, name: str) -> tuple[ArmId, ...]:
        """The arms Route accepts for a policy now (empty: any, if allow_new_arms)."""
        return tuple(sorted(self._resolve(name).arms))

    def set_arms(self, name: str, arms: Sequence[ArmId]) -> None:
        """Replace a policy's arm list at runtime (Admin AddArm/RemoveArm)."""
        for arm in arms:
            if not ARM_ID.match(arm):
                raise InvalidRequestError(f"arm id {shown(arm)} must be 1-128 printable characters")
        policy = self._resolve(name)
        if len(arms) > policy.config.max_arms:
            raise ResourceExhaustedError(
                f"policy {name!r} may route to at most {policy.config.max_arms} arms (max_arms)"
            )
        self._policies[name] = dataclasses.replace(policy, arms=frozenset(arms))

    def clipped(self) -> dict[str, int]:
        """Per policy: Route inputs clipped to their bounds so far (features, prices)."""
        out = dict(self._clipped)
        for name, policy in self._policies.items():
            extracted = getattr(policy.extractor, "clipped", 0)
            if extracted:
                out[name] = out.get(name, 0) + extracted
        return out

    def specs(self) -> dict[str, ModelSpec]:
        return {name: p.spec for name, p in self._policies.items()}

    def _resolve(self, name: str) -> _Policy:
        policy = self._policies.get(name)
        if policy is not None:
            return policy
        if self._template is None:
            known = ", ".join(sorted(self._policies)) or "none"
            raise UnknownPolicyError(
                f"unknown policy {shown(name)}; declared policies: {known}"
                " (declare it in the config or set auto_create_policies)"
            )
        if not POLICY_NAME.fullmatch(name):
            raise InvalidRequestError(f"policy name {shown(name)} must match {POLICY_NAME.pattern}")
        if self._auto_created >= self._max_auto_policies:
            raise ResourceExhaustedError(
                f"policy {shown(name)} is not declared and {self._auto_created} policies were"
                f" already auto-created, the limit (max_auto_policies ="
                f" {self._max_auto_policies}); declare the policy in the config or raise the limit"
            )
        config = dataclasses.replace(self._template, name=name)
        policy = self._policies[name] = self._build(config)
        self._auto_created += 1
        return policy

    # -- Route ---------------------------------------------------------------------------
    async def route(
        self,
        policy_name: str,
        segment: str,
        context: Context,
        candidates: Sequence[Candidate],
        replica: str = "",
    ) -> RouteResult:
        policy = self._resolve(policy_name)
        config = policy.config
        ids, penalty, arm_features = self._check_candidates(policy, segment, candidates)
        # Paging: a non-resident adapter pays its expected paging cost (banditd/cache/pager.py).
        paging = self._pager.config(config.name) if self._pager and replica else None
        if self._pager is not None and paging is not None:
            self._pager.admit(replica, paging)
        x = await policy.extractor.extract(context)
        shared = arm_features is not None
        key = ModelKey(config.name, segment)
        if arm_features is not None:
            xs = [interaction(x, z) for z in arm_features]
            snapshot = await self._store.load(key, (SHARED_ARM,), policy.spec, for_route=True)
            states = [snapshot.arms[SHARED_ARM]] * len(ids)
        else:
            snapshot = await self._store.load(key, ids, policy.spec, for_route=True)
            arms = snapshot.arms
            states = [arms[arm] for arm in ids]
        if self._pager is not None and paging is not None:
            residency = await self._pager.residency(replica, paging)
            penalty = penalty + self._pager.penalty(residency, ids, paging)
        stacked, pulls = (None, None) if shared else self._stacked(key, ids, states)
        params = policy.params
        if stacked is None:  # a shared model, or a single candidate
            xs = xs if shared else [x]
            if isinstance(params, linucb.LinUCBParams):
                choice = linucb.choose(states, xs, penalty, params, self._rng)
            else:
                choice = thompson.choose(states, xs, penalty, params, self._rng)
        elif isinstance(params, linucb.LinUCBParams):
            choice = linucb.choose_stacked(stacked, x, penalty, params, self._rng)
        else:
            choice = thompson.choose_stacked(stacked, x, penalty, params, self._rng)
        if self._pager is not None and paging is not None:
            choice = self._pager.explore(paging, replica, residency, ids, choice, self._rng)
        self._check_finite(config.name, segment, choice)
        now = self._clock.now()
        decision_id = self._new_id(config.name, segment)
        index = choice.index
        arm = ids[index]
        propensity = float(choice.propensity[index])
        deadline = now + config.reward_wait_s
        pending = PendingDecision(
            decision_id, config.name, segment, arm, xs[index] if shared else x, propensity,
            snapshot.version, now, deadline, SHARED_ARM if shared else "",
        )  # fmt: skip
        logged_as = await self._store.record(pending, policy.spec)
        if logged_as != decision_id:  # buffered while the store was down: a marked id
            decision_id = logged_as
            pending = dataclasses.replace(pending, decision_id=logged_as)
        advice = None
        if self._pager is not None and paging is not None:
            advice = await self._pager.observe(
                paging, replica, residency, ids, choice.estimate + choice.bonus, arm, now
            )
        if self._trace is not None:
            self._trace.write(_decision_record(pending, context, candidates, choice, x))
        return RouteResult(
            decision_id, arm, propensity, ids, choice,
            pulls if pulls is not None else tuple(s.n for s in states),
            snapshot.version, config.algorithm, snapshot.degraded, policy.extractor.fingerprint,
            deadline, advice,
        )  # fmt: skip

    def _check_finite(self, policy: str, segment: str, choice: Choice) -> None:
        """Scores and propensities are finite by construction (bounded inputs, finite states);
        this proves it for each Route, so a NaN never reaches a caller or the trace."""
        scores = choice.floats[2] if choice.floats is not None else choice.score.tolist()
        chosen = float(choice.propensity[choice.index])
        if math.isfinite(sum(scores, 0.0)) and 0.0 < chosen <= 1.0 + 1e-9:
            return
        self.nonfinite_routes += 1
        raise FailedPreconditionError(
            f"the model of {policy!r}/{segment!r} gave non-finite scores or propensities; nothing"
            " was recorded. Its state is suspect: export it, then delete the segment or reset"
            " the policy"
        )

    def _stacked(
        self, key: ModelKey, ids: tuple[ArmId, ...], states: Sequence[ArmState]
    ) -> tuple[Stack | None, tuple[int, ...] | None]:
        """The candidates' states stacked for vectorised scoring, and their pull counts.

        Cached per (model, arms): between Routes usually one arm changed (one Feedback), so
        only its rows are copied.
        """
        if len(states) < 2:
            return None, None
        cache_key = (key, ids)
        entry = self._stacks.pop(cache_key, None)
        if entry is None:
            block = linear.stack(states)
            self._stack_bytes += block.rows.nbytes
            while self._stacks and (
                len(self._stacks) >= MAX_STACKS or self._stack_bytes > MAX_STACK_BYTES
            ):
                self._stack_bytes -= self._stacks.pop(next(iter(self._stacks)))[1].rows.nbytes
            pulls = tuple(s.n for s in states)
        else:
            previous, block, pulls = entry
            if linear.restack(block, previous, states):
                pulls = tuple(s.n for s in states)
        self._stacks[cache_key] = (tuple(states), block, pulls)
        return block, pulls

    def _check_candidates(
        self, policy: _Policy, segment: str, candidates: Sequence[Candidate]
    ) -> tuple[tuple[ArmId, ...], Vector, list[Vector] | None]:
        """Validate the candidates; return their ids, selection-time penalties and (shared
        model) arm-feature vectors, out-of-range values clipped or refused by the policy's rule.

        Written for the hot path: checks run over whole columns (one `sum` proves every cost
        and latency finite unless it overflows, four comparisons prove them in range), and the
        per-candidate loops that name the offender run only when a check fails.
        """
        config = policy.config
        k = len(candidates)
        if not k:
            raise InvalidRequestError("no candidates: send at least one arm to choose from")
        if k > config.max_candidates:
            raise InvalidRequestError(
                f"{k} candidates; policy {config.name!r} allows at most"
                f" {config.max_candidates} (max_candidates)"
            )
        if segment and not SEGMENT.match(segment):
            raise InvalidRequestError(
                f"segment {shown(segment)} must be at most 128 printable non-space characters"
            )
        ids = tuple([c.id for c in candidates])
        if len(set(ids)) != k:
            dupes = sorted(i for i, n in collections.Counter(ids).items() if n > 1)[:5]
            raise InvalidRequestError(f"duplicate candidate ids {shown(dupes)}")
        if not policy.arms.issuperset(ids):  # declared arms were validated at start-up
            self._check_new_arms(policy, ids)
        costs = [c.cost for c in candidates]
        latencies = [c.expected_latency_ms for c in candidates]
        price = config.price
        if (
            not math.isfinite(sum(costs, 0.0) + sum(latencies, 0.0))
            or min(latencies) < 0
            or max(latencies) > price.max_latency_ms
            or max(costs) > price.max_cost
            or min(costs) < -price.max_cost
        ):
            costs, latencies = self._prices_in_range(config, candidates)
        arm_features = self._arm_features(config, candidates) if config.model == "shared" else None
        if arm_features is None and any([c.features for c in candidates]):  # noqa: C419
            bad = next(c.id for c in candidates if c.features)
            raise InvalidRequestError(
                f"candidate {bad!r} has features but policy {config.name!r} is disjoint"
                " (per-arm features need model = 'shared')"
            )
        w_cost, w_latency = price.cost, price.latency_ms
        if not (w_cost or w_latency):
            return ids, zeros(k), arm_features
        penalty = np.array(
            [w_cost * c + w_latency * t for c, t in zip(costs, latencies, strict=True)]
        )
        return ids, penalty, arm_features

    def _prices_in_range(
        self, config: PolicyConfig, candidates: Sequence[Candidate]
    ) -> tuple[list[float], list[float]]:
        """Costs and latencies with out-of-range ones clipped, or InvalidRequestError naming the
        first bad candidate (non-finite or negative latency: always refused)."""
        price = config.price
        costs, latencies = [], []
        for c in candidates:  # (an overflowing sum of finite values passes this loop)
            cost, latency = c.cost, c.expected_latency_ms
            if not (math.isfinite(cost) and math.isfinite(latency)):
                raise InvalidRequestError(f"candidate {c.id!r} has a non-finite cost or latency")
            if latency < 0:
                raise InvalidRequestError(f"candidate {c.id!r} has a negative expected latency")
            if abs(cost) > price.max_cost or latency > price.max_latency_ms:
                if not config.clip_out_of_range:
                    raise InvalidRequestError(
                        f"candidate {c.id!r} has cost {cost:g} / expected latency {latency:g} ms;"
                        f" policy {config.name!r} takes |cost| <= {price.max_cost:g} and"
                        f" latency <= {price.max_latency_ms:g} ms (price.max_cost,"
                        " price.max_latency_ms)"
                    )
                self._clipped[config.name] = self._clipped.get(config.name, 0) + 1
                cost = min(max(cost, -price.max_cost), price.max_cost)
                latency = min(latency, price.max_latency_ms)
            costs.append(cost)
            latencies.append(latency)
        return costs, latencies

    def _arm_features(self, config: PolicyConfig, candidates: Sequence[Candidate]) -> list[Vector]:
        """The shared model's per-arm feature vectors, checked (and clipped) like features."""
        bound = config.max_abs_arm_feature
        out = []
        for c in candidates:
            if len(c.features) != config.arm_features:
                raise InvalidRequestError(
                    f"candidate {c.id!r} has {len(c.features)} features; policy"
                    f" {config.name!r} expects {config.arm_features} (arm_features)"
                )
            z = np.asarray(c.features, dtype=np.float64)
            if not np.isfinite(z).all():
                raise InvalidRequestError(f"candidate {c.id!r} has non-finite features")
            if np.abs(z).max(initial=0.0) > bound:
                if not config.clip_out_of_range:
                    raise InvalidRequestError(
                        f"candidate {c.id!r} has a feature beyond ±{bound:g}; policy"
                        f" {config.name!r} takes arm features within ±{bound:g}"
                        " (max_abs_arm_feature)"
                    )
                self._clipped[config.name] = self._clipped.get(config.name, 0) + 1
                z = np.clip(z, -bound, bound)
            out.append(z)
        return out

    def _check_new_arms(self, policy: _Policy, ids: tuple[ArmId, ...]) -> None:
        """Candidates outside the declared arms: valid ids, and only if allow_new_arms."""
        config = policy.config
        if not policy.arms and not config.allow_new_arms:
            raise InvalidRequestError(
                f"policy {config.name!r} declares no arms; declare arms or set allow_new_arms"
            )
        for arm in ids:
            if arm in policy.arms:
                continue
            if not ARM_ID.match(arm):
                raise InvalidRequestError(
                    f"candidate id {shown(arm)} must be 1-128 printable non-space characters"
                )
            if not config.allow_new_arms:
                raise InvalidRequestError(
                    f"unknown arm {arm!r} for policy {config.name!r}; declared arms:"
                    f" {shown(sorted(policy.arms))} (or set allow_new_arms)"
                )
            added = self._new_arms.setdefault(config.name, set())
            if arm not in added:
                if len(policy.arms) + len(added) >= config.max_arms:
                    raise ResourceExhaustedError(
                        f"policy {config.name!r} already routes to {config.max_arms} arms, its"
                        f" limit (max_arms); new arm {arm!r} refused. Raise max_arms or send"
                        " only the arms you serve"
                    )
                added.add(arm)

    # -- Feedback ------------------------------------------------------------------------
    async def feedback(
        self, decision_id: str, reward: float | None, metrics: Mapping[str, float]
    ) -> FeedbackResult:
        policy, value = self._feedback_value(decision_id, reward, metrics)
        now = self._clock.now()
        settled = await self._store.settle(decision_id, value, now, policy.spec)
        return self._joined(policy, decision_id, value, now, settled)

    async def feedback_many(
        self, items: Sequence[tuple[str, float | None, Mapping[str, float]]]
    ) -> list[FeedbackResult | BanditdError]:
        """`feedback` for each (decision_id, reward, metrics), in order; errors per item.

        The outcome is what calling `feedback` on each item in turn would give: a decision id
        that repeats is settled after its earlier occurrence (so it is DUPLICATE). Items with
        distinct decision ids are independent (their updates commute), so a store that settles
        concurrently (Redis) gets them in waves, each wave in parallel; one item per decision
        id per wave.
        """
        out: list[FeedbackResult | BanditdError] = []
        waves: list[list[int]] = []
        seen: dict[str, int] = {}
        prepared: list[tuple[_Policy, float] | None] = []
        for i, (decision_id, reward, metrics) in enumerate(items):
            try:
                prepared.append(self._feedback_value(decision_id, reward, metrics))
            except BanditdError as exc:
                prepared.append(None)
                out.append(exc)
                continue
            out.append(_NOT_YET)
            wave = seen.get(decision_id, 0)
            seen[decision_id] = wave + 1
            if wave == len(waves):
                waves.append([])
            waves[wave].append(i)
        now = self._clock.now()

        async def one(i: int) -> FeedbackResult | BanditdError:
            ready = prepared[i]
            assert ready is not None
            policy, value = ready
            decision_id = items[i][0]
            try:
                settled = await self._store.settle(decision_id, value, now, policy.spec)
                return self._joined(policy, decision_id, value, now, settled)
            except BanditdError as exc:
                return exc

        for wave_items in waves:
            if self._store.concurrent and len(wave_items) > 1:
                results = await asyncio.gather(*(one(i) for i in wave_items))
            else:
                results = [await one(i) for i in wave_items]
            for i, result in zip(wave_items, results, strict=True):
                out[i] = result
        return out

    def _feedback_value(
        self, decision_id: str, reward: float | None, metrics: Mapping[str, float]
    ) -> tuple[_Policy, float]:
        """The decision's policy and the reward to learn; errors before anything is stored."""
        name = policy_of(decision_id)
        policy = self._policies.get(name)
        if policy is None and self._template is not None and POLICY_NAME.fullmatch(name):
            policy = self._resolve(name)  # auto-created on another replica
        if policy is None:
            raise DecisionNotFoundError(
                f"decision {shown(decision_id)} is unknown (unknown policy)"
            )
        return policy, self._reward(policy.config, reward, metrics)

    def _joined(
        self, policy: _Policy, decision_id: str, value: float, now: float, settled: Settlement
    ) -> FeedbackResult:
        """The store's settlement as Feedback's answer (or its NOT_FOUND error), traced."""
        if self._trace is not None and settled.outcome is not Outcome.UNKNOWN:
            self._trace.write(_outcome_record(settled, now, value))
        name = policy.config.name
        match settled.outcome:
            case Outcome.APPLIED:
                self.window.ended(name, expired=False)
            case Outcome.EXPIRED if settled.policy:  # it was pending: its expiry rule ran now
                self.window.ended(name, expired=True, late_by_s=now - settled.settled_at)
            case Outcome.EXPIRED:  # the sweeper had settled it already (counted then)
                self.window.late(name, now - settled.settled_at)
        match settled.outcome:
            case Outcome.APPLIED | Outcome.DUPLICATE:
                applied = value if settled.reward is None else settled.reward
                return FeedbackResult(
                    settled.outcome, settled.arm, applied, settled.model_version,
                    policy.config.name,
                )  # fmt: skip
            case Outcome.EXPIRED:
                rule = (
                    "dropped it" if settled.reward is None
                    else f"applied its default reward {settled.reward}"
                )  # fmt: skip
                raise DecisionExpiredError(
                    f"decision {shown(decision_id)} expired: its reward wait window"
                    f" ({policy.config.reward_wait_s:g} s) ended at unix time"
                    f" {settled.settled_at:.3f} and the policy {rule}; this reward was not applied"
                )
            case _:
                raise DecisionNotFoundError(
                    f"decision {shown(decision_id)} is unknown: never issued, or settled longer ago"
                    " than store.tombstone_ttl_s"
                )

    @staticmethod
    def _reward(config: PolicyConfig, reward: float | None, metrics: Mapping[str, float]) -> float:
        try:
            return config.reward.value(reward, metrics)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None

    # -- expiry --------------------------------------------------------------------------
    async def expire(self, limit: int = 1000) -> list[Settlement]:
        """Settle decisions whose reward wait window ended (default reward or drop)."""
        now = self._clock.now()
        settled = await self._store.expire(now, limit, self.specs())
        for s in settled:
            self.window.ended(s.policy, expired=True)
        if self._trace is not None:
            for s in settled:
                self._trace.write(_outcome_record(s, now, None))
        return settled

    def window_warnings(self) -> list[WindowWarning]:
        """Policies whose rewards come after their window (WindowWatch; rate-limited)."""
        windows = {name: p.config.reward_wait_s for name, p in self._policies.items()}
        return self.window.warnings(self._clock.now(), windows)


def _decision_record(
    pending: PendingDecision,
    context: Context,
    candidates: Sequence[Candidate],
    choice: Choice,
    x: Vector,
) -> dict[str, object]:
    return {
        "type": "decision",
        "t": pending.created_at,
        "decision_id": pending.decision_id,
        "policy": pending.policy,
        "segment": pending.segment,
        "arm": pending.arm,
        "propensity": pending.propensity,
        "model_version": pending.model_version,
        "deadline": pending.deadline,
        "x": x.tolist(),
        "context": {
            "features": dict(context.features),
            "categorical": dict(context.categorical),
        },
        "candidates": [
            {
                "id": c.id,
                "features": list(c.features),
                "cost": c.cost,
                "expected_latency_ms": c.expected_latency_ms,
            }
            for c in candidates
        ],
        "scores": choice.score.tolist(),
        "propensities": choice.propensity.tolist(),
    }


def _outcome_record(settled: Settlement, now: float, reported: float | None) -> dict[str, object]:
    """`reward` is what the model learned (None: nothing); `reported` what feedback carried."""
    return {
        "type": "outcome",
        "t": now,
        "decision_id": settled.decision_id,
        "outcome": settled.outcome.value,
        "arm": settled.arm,
        "reward": settled.reward if settled.outcome is not Outcome.DUPLICATE else None,
        "reported": reported,
        "model_version": settled.model_version,
    }
