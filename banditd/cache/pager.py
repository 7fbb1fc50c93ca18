"""Pager: the router's paging component. Prices residency into Route and runs the controller.

It issues no adapter I/O itself: the serving stack loads and evicts, following the directives
(ReportResidency / GetPagingPlan / RouteResponse.paging). Timescale: the controller runs when a
replica's epoch of Route calls ends (EpochClock), inline in that Route, so plans are a function
of the request sequence (deterministic under a seed, no background task).

State is per replica (one GPU's fast memory) and in process: an epoch clock, a load-rate bucket,
the last `window` utility rows (the router's optimistic scores θ·x + bonus per candidate), the
and the latest plan. Replicas should be paged by one policy each.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from banditd.cache.controller import (
    ControllerParams,
    Directive,
    EpochClock,
    Load,
    LoadBudget,
    PagingCost,
    Residency,
    epoch_length,
    exploration_rate,
    force,
    plan,
    select,
)
from banditd.cache.residency import ResidencyStore
from banditd.errors import InvalidRequestError, ResourceExhaustedError
from banditd.policies.choice import Choice, draw
from banditd.policies.linear import Vector

MAX_REPLICAS = 4096  # bounds the in-process state a caller can create
REPLICA = re.compile(r"^[^\s\x00-\x1f]{1,128}$")


def _too_many_replicas() -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"more than {MAX_REPLICAS} replicas are paged; replica names should name serving"
        " replicas (GPUs), not requests"
    )


def check_replica(replica: str) -> str:
    if not REPLICA.match(replica):
        raise InvalidRequestError("replica must be 1-128 printable non-space characters")
    return replica


@dataclass(frozen=True, slots=True)
class PagingConfig:
    """One policy's paging rules (config.py PagingSettings → this; the core never sees pydantic).

    capacity_*: defaults for replicas that have not reported theirs; window: utility rows kept;
    max_loads_per_s / load_burst: token bucket on loads across plans (0 = no limit).
    """

    capacity_slots: int = 4
    capacity_bytes: int = 0
    cost: PagingCost = field(default_factory=PagingCost)
    controller: ControllerParams = field(default_factory=ControllerParams)
    max_loads_per_s: float = 0.0
    load_burst: int = 1
    window: int = 512


@dataclass(frozen=True, slots=True)
class PagingAdvice:
    """What Route tells the caller about paging the chosen adapter on its replica.

    must_load: the adapter is not resident; load it to serve this request (a transient load:
    residency changes only by the plan's directives). directives: the replica's current plan.
    """

    replica: str
    adapter: str
    must_load: bool
    latency_ms: float
    penalty: float
    epoch: int
    directives: tuple[Directive, ...]


@dataclass(frozen=True, slots=True)
class PagingPlan:
    """A replica's latest plan (epoch it was made in) and banditd's view of its residency."""

    replica: str
    epoch: int
    directives: tuple[Directive, ...]
    residency: Residency


@dataclass
class _Replica:
    clock: EpochClock
    budget: LoadBudget
    rows: deque[tuple[tuple[str, ...], Vector]]
    plan: tuple[Directive, ...] = ()
    plan_epoch: int = 0


@dataclass
class PagerStats:
    """Cumulative directives issued by the epoch plans (exported as Prometheus counters)."""

    loads: int = 0
    evictions: int = 0


class Pager:
    """Per-replica residency view, routing price and epoch controller for paging policies."""

    def __init__(self, configs: Mapping[str, PagingConfig], store: ResidencyStore) -> None:
        self._configs = dict(configs)
        self._store = store
        self._replicas: dict[str, _Replica] = {}
        self.stats = PagerStats()

    def config(self, policy: str) -> PagingConfig | None:
        return self._configs.get(policy)

    async def residency(self, replica: str, config: PagingConfig) -> Residency:
        known = await self._store.get(check_replica(replica))
        if known is not None:
            return known
        return Residency(frozenset(), config.capacity_slots, config.capacity_bytes)

    @staticmethod
    def penalty(residency: Residency, ids: Sequence[str], config: PagingConfig) -> Vector:
        """Per-candidate paging price in reward units (0 for resident adapters)."""
        return np.fromiter((config.cost.price(a, residency) for a in ids), np.float64, len(ids))

    def _state(self, replica: str, config: PagingConfig) -> _Replica:
        state = self._replicas.get(replica)
        if state is None:
            if len(self._replicas) >= MAX_REPLICAS:
                raise _too_many_replicas()
            burst = max(config.load_burst, 1)
            budget = LoadBudget(config.max_loads_per_s, burst, float(burst), 0.0)
            state = _Replica(EpochClock(), budget, deque(maxlen=config.window))
            self._replicas[replica] = state
        return state

    def admit(self, replica: str, config: PagingConfig) -> None:
        """Check a Route's replica before anything is decided: a malformed name or one past
        MAX_REPLICAS is refused here, so a refused Route leaves no paging state behind."""
        self._state(check_replica(replica), config)

    def explore(
        self,
        config: PagingConfig,
        replica: str,
        residency: Residency,
        ids: Sequence[str],
        choice: Choice,
        rng: np.random.Generator,
    ) -> Choice:
        """POLAR+ forced exploration: with probability c/sqrt(t), a random non-resident arm."""
        state = self._replicas.get(replica)
        t = (state.clock.total if state else 0) + 1
        rate = exploration_rate(config.controller.forced_exploration, t)
        eligible = np.fromiter((a not in residency.resident for a in ids), np.bool_, len(ids))
        propensity = force(choice.propensity, eligible, rate)
        if propensity is choice.propensity:
            return choice
        return dataclasses.replace(choice, index=draw(propensity, rng), propensity=propensity)

    async def observe(
        self,
        config: PagingConfig,
        replica: str,
        residency: Residency,
        ids: Sequence[str],
        utility: Vector,
        arm: str,
        now: float,
    ) -> PagingAdvice:
        """Record one routed request; at an epoch end, make the replica's next plan."""
        state = self._state(replica, config)
        first = state.clock.total == 0
        state.rows.append((tuple(ids), np.asarray(utility, dtype=np.float64)))
        state.clock, boundary = state.clock.tick(config.controller)
        if boundary or first:
            await self._replan(config, replica, state, residency, now)
        return PagingAdvice(
            replica,
            arm,
            arm not in residency.resident,
            config.cost.latency_ms(arm, residency) if arm not in residency.resident else 0.0,
            config.cost.price(arm, residency),
            state.plan_epoch,
            state.plan,
        )

    async def _replan(
        self, config: PagingConfig, replica: str, state: _Replica, residency: Residency, now: float
    ) -> None:
        params = config.controller
        adapters = sorted(
            {a for ids, _ in state.rows for a in ids} | residency.resident | params.pinned
        )
        column = {a: j for j, a in enumerate(adapters)}
        utility = np.zeros((len(state.rows), len(adapters)))
        for r, (ids, row) in enumerate(state.rows):
            utility[r, :] = row.min()  # adapters that were not candidates add nothing
            utility[r, [column[a] for a in ids]] = row
        empty = Residency(
            frozenset(),
            residency.capacity_slots,
            residency.capacity_bytes,
            residency.size_bytes,
            residency.load_ms,
        )
        load_cost = [config.cost.price(a, empty) for a in adapters]
        horizon = epoch_length(params, state.clock.epoch)
        target = select(adapters, utility, residency, params, load_cost, horizon)
        wanted = sum(a not in residency.resident for a in target)
        granted, state.budget = state.budget.take(now, wanted)
        value = dict(zip(adapters, utility.mean(axis=0).tolist(), strict=True))
        directives = plan(residency, target, params, value, granted)
        # Refund the tokens of loads the plan could not make room for.
        loads = sum(isinstance(d, Load) for d in directives)
        if loads < granted and state.budget.rate_per_s > 0:
            b = state.budget
            state.budget = LoadBudget(b.rate_per_s, b.burst, b.tokens + granted - loads, b.at)
        self.stats.loads += loads
        self.stats.evictions += len(directives) - loads
        state.plan, state.plan_epoch = tuple(directives), state.clock.epoch
        await self._store.put(replica, residency.apply(directives))

    async def report(self, replica: str, residency: Residency) -> PagingPlan:
        """The serving stack's account of a replica's residency replaces banditd's view."""
        check_replica(replica)
        known = replica in self._replicas or await self._store.get(replica) is not None
        if not known and len(await self._store.replicas()) >= MAX_REPLICAS:
            raise _too_many_replicas()
        await self._store.put(replica, residency)
        return await self.current(replica)

    async def current(self, replica: str) -> PagingPlan:
        """The replica's latest plan and residency view (an empty plan if never seen)."""
        state = self._replicas.get(replica)
        residency = await self._store.get(replica) or Residency(frozenset(), 0)
        if state is None:
            return PagingPlan(replica, 0, (), residency)
        return PagingPlan(replica, state.plan_epoch, state.plan, residency)
