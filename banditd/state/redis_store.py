"""RedisModelStore: shared model state and pending decisions in Redis (or a Redis Cluster).

Design (docs/redis.md has the long form):
- Redis holds only additive statistics per (policy, segment, arm): S, b, n and a decay epoch.
  Every update runs inside one Lua script (lua/settle.lua) that also does the join: it takes
  the pending decision, adds x xᵀ and r x, bumps the model version, writes the tombstone. So a
  decision is applied exactly once, whichever replica gets its feedback or expiry.
- Each replica caches the derived A⁻¹ per arm, keyed by the arm's stamp. A Route costs one
  round trip of small stamps; only arms whose stamp moved are fetched and refactorised. A
  reward this replica settles on an arm it holds moves its cache too (Sherman–Morrison), so
  only other replicas' updates (and decay epochs) are fetched.
- Coalescing (coalescer.py; on by default): the scripts of concurrent Routes and Feedbacks
  queued in one event-loop turn go to Redis as one pipeline over one connection, so under load
  a Route+Feedback costs well under its 3 round trips, and much less client CPU than a
  redis-py call each. Each script stays atomic; the join stays exactly once.
- Outage: calls are bounded by timeout_s. load() then serves the cached model flagged
  degraded; record() keeps the decision in a bounded local buffer, flushed when Redis answers
  again; settle() raises StateUnavailableError (gRPC UNAVAILABLE; retries are idempotent).
- Keys (keys.py): a decision's join touches only its segment's slot, so one policy's segments
  spread over a Redis Cluster's shards. What spans segments (the registry of a policy's
  segments, the set of slots in use) is updated in separate calls: registering a segment is
  not atomic with the decisions and rewards that use it, so the segment limit is approximate
  under races (docs/redis.md, "Segments across slots"); the join stays exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from operator import methodcaller
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from banditd.errors import (
    FailedPreconditionError,
    StateUnavailableError,
    UpdateRefusedError,
    shown,
)
from banditd.feedback import ids
from banditd.policies import linear
from banditd.policies.linear import ArmState
from banditd.state import codec, keys, outage
from banditd.state.coalescer import Arg, ClusterCoalescer, Coalescer
from banditd.state.connection import RedisClient
from banditd.state.keys import Slot
from banditd.state.layout import LAYOUT_WAIT_S, Layout
from banditd.state.memory_store import check_fingerprint, segment_limit_error
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

log = structlog.get_logger("banditd.state")


PRUNE_EVERY_S = 60.0  # how often the sweep looks for a policy's idle segments
MAX_FIELD_LISTS = 4096  # cached load.lua field lists, one per (segment, candidate list)
MAX_TOUCHED = 16_384  # segments this replica remembers registering, and when (sizing.py)
REFRESH_S = 60.0  # a segment's last use is refreshed at most this often (per replica)
MAX_VISIT_GAP_S = 300.0  # the expiry sweep looks at every slot at least this often
FORGET_AT_ONCE = 16  # segments' states forgotten concurrently (each a call on its slot)
CLOCK_SKEW_S = 30.0  # replicas' clocks may differ this much (buffered-id retry window)
MIGRATED = (
    "the Redis state moved to per-segment slots (a replica with store.redis.key_layout ="
    " 'segment' migrated it); this replica has key_layout = 'policy': restart it with 'segment'"
    " (retry: another replica takes the call)"
)
MAX_ROUTED = 16_384  # decisions this replica recorded, remembered (policy, segment, arm) for
# while their Feedback may come back here: a load skips fetching arms its own settles move
SKIP_STAMP = str(2**62)  # a cached stamp load.lua never finds older than the stored one


def _lua(name: str) -> str:
    return resources.files("banditd.state").joinpath("lua", name).read_text("utf-8")


def segment_script() -> str:
    """The segment helpers (lua/segment.lua), to put in front of a script that uses them."""
    return _lua("segment.lua")


def _script(name: str) -> str:
    """A Lua script of lua/, with the segment helpers in front of it."""
    return segment_script() + _lua(name)


async def _together(*calls: Awaitable[Any]) -> list[Any]:
    """Run calls concurrently (on a Cluster, often on different nodes); their results, or
    the first error once all have ended (so no failure goes unretrieved)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@dataclass(frozen=True, slots=True)
class RedisStoreParams:
    """prefix: key prefix; timeout_s: bound on each network step; pending_grace_s: pending
    decisions outlive their deadline by this much (so a sweeper that was down can still
    expire them); retry_after_s: after a connection failure, calls fail fast this long;
    max_buffered: decisions kept locally while Redis is down; max_cached_models: (policy,
    segment) models whose derived inverses this replica keeps; max_connections: the client's
    pool size (calls beyond it wait for a free connection, up to timeout_s);
    buffer_max_age_s: a buffered decision not flushed within this is given up (counted), and
    other replicas answer UNAVAILABLE for its feedback until then; spill_path: where close()
    writes buffered decisions it could not flush, read back at the next start ('' = off);
    spill_adopt: other spill files to read back at start too (a run with another number of
    worker processes left them: server/workers.py), removed with spill_path's; cache_bytes:
    bound on the derived model state cached (least recently loaded goes first);
    coalesce: send the scripts of concurrent calls as one pipeline per event-loop turn over one
    dedicated connection (coalescer.py) instead of one pooled redis-py call each;
    key_layout: "segment" (a hash slot per (policy, segment tag)) or "policy" (every key of
    a policy in its own slot: the layout before segment tags, for a rolling upgrade)."""

    prefix: str = keys.DEFAULT_PREFIX
    timeout_s: float = 0.25
    pending_grace_s: float = 3600.0
    tombstone_ttl_s: float = 86_400.0
    retry_after_s: float = 0.5
    max_buffered: int = 10_000
    max_cached_models: int = 10_000
    max_connections: int = 64
    buffer_max_age_s: float = 600.0
    spill_path: str = ""
    spill_adopt: tuple[str, ...] = ()
    cache_bytes: int = 64 << 20
    coalesce: bool = True
    key_layout: str = "segment"

    def __post_init__(self) -> None:
        if self.key_layout not in ("segment", "policy"):
            raise ValueError(f"key_layout must be 'segment' or 'policy', got {self.key_layout!r}")


@dataclass(slots=True)
class StoreStats:
    """Counters the daemon exports as metrics (monotone, except `buffered`)."""

    unavailable: int = 0  # calls that failed because Redis was down or slow
    degraded_loads: int = 0  # loads answered from the local cache
    unrecorded: int = 0  # decisions lost while down: the outage buffer was full
    lost_pending: int = 0  # pending decisions that vanished (TTL) before being settled
    buffered: int = 0  # decisions waiting in the outage buffer now
    bytes_in: int = 0  # payload bytes of state fetched by load()
    fetches: int = 0  # HMGETs of sums blobs by load()
    absorbed: int = 0  # settled rewards added to the cache in place of a later fetch
    refactorised: int = 0  # fetched sums turned into A⁻¹ (from_sums, O(d³))
    busy: int = 0  # calls refused because every pooled connection stayed in use
    refused_updates: int = 0  # rewards refused because the sums would turn non-finite
    buffer_expired: int = 0  # buffered decisions given up after buffer_max_age_s
    spilled: int = 0  # buffered decisions written to spill_path by close()
    unspilled: int = 0  # buffered decisions read back from spill_path at start
    expired_segments: int = 0  # segments forgotten after segment_ttl_s unused
    flushes: int = 0  # pipelines the coalescer sent (one network write each; per node on a Cluster)
    flushed_commands: int = 0  # commands those pipelines carried


@dataclass(slots=True)
class _Cached:
    stamp: int
    state: ArmState


class RedisModelStore:
    """ModelStore over Redis; any number of replicas may share one Redis (or Cluster)."""

    concurrent = True  # settles of distinct decisions overlap their round trips

    def __init__(
        self,
        client: RedisClient,
        params: RedisStoreParams | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._p = params or RedisStoreParams()
        self._now = clock
        self._keys = keys.Keys(self._p.prefix, per_segment=self._p.key_layout == "segment")
        self._settle = client.register_script(_script("settle.lua"))
        self._record = client.register_script(_script("record.lua"))
        self._load = client.register_script(_script("load.lua"))
        self._touch = client.register_script(_lua("touch.lua"))
        self._prune = client.register_script(_lua("prune.lua"))
        # KEYS as slot_keys(); ARGV[1] the segment. Returns 1 if it had state, else 0.
        self._forget = client.register_script(
            segment_script() + "return forget_segment(KEYS[1], KEYS[2], KEYS[3], ARGV[1])"
        )
        # KEYS[1] the registry; ARGV[1] a segment, ARGV[2] the limit. Returns 0 if a Route
        # may use the segment, else the number of segments registered (the limit is reached).
        self._full = client.register_script(
            "if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end "
            "local n = redis.call('ZCARD', KEYS[1]) "
            "if n >= tonumber(ARGV[2]) then return n end return 0"
        )
        self.layout = Layout(
            client, self._keys, partial(self.call, migrating=True), segment_script(),
            _script("index.lua"),
        )  # fmt: skip
        self._known_tags: set[tuple[str, str]] = set()  # (policy, tag) in the policy's tags set
        self._touched: dict[tuple[str, str], float] = {}  # (policy, segment) -> registered at
        self._next_visit: dict[Slot, float] = {}  # the sweep need not look at a slot before
        self._tag_slots: dict[str, list[Slot]] = {}  # the tags set, as the sweep last read it
        self._fields: dict[tuple[str, tuple[ArmId, ...]], tuple[str, str, str, str]] = {}
        self._cache: dict[ModelKey, dict[ArmId, _Cached]] = {}  # least recently loaded first
        self._cache_bytes = 0
        self._pruned_at: dict[str, float] = {}  # policy -> when its idle segments were pruned
        self._versions: dict[ModelKey, int] = {}
        self._buffer: dict[DecisionId, PendingDecision] = {}
        self._known_policies: set[str] = set()
        self._down_until = 0.0
        self._flush_lock = asyncio.Lock()
        # One connection stays free for the readiness ping (which is not a `call`).
        self._slots = asyncio.Semaphore(max(1, self._p.max_connections - 1))
        self.stats = StoreStats()
        self._coalescer: Coalescer | ClusterCoalescer | None = None
        if self._p.coalesce:
            self._coalescer = (
                ClusterCoalescer(client, self.stats)
                if isinstance(client, RedisCluster)
                else Coalescer(client, self._p.timeout_s, self.stats)
            )
        # Own settles in flight per (model, arm), and where this replica's recent decisions
        # learn, so a load can leave those arms' sums in Redis (_load_once). Only over the
        # single-node coalescer: its one connection keeps a settle's reply ahead of a later
        # load's.
        self._ordered = isinstance(self._coalescer, Coalescer)
        self._routed: dict[DecisionId, tuple[ModelKey, ArmId]] = {}
        self._settling: dict[tuple[ModelKey, ArmId], int] = {}
        self._spill = None
        if self._p.spill_path:
            adopted = tuple(Path(p) for p in self._p.spill_adopt)
            self._spill = outage.SpillFile(Path(self._p.spill_path), adopted)
        if self._spill is not None:
            for decision in self._spill.read():
                self._buffer[decision.decision_id] = decision
            self.stats.unspilled = self.stats.buffered = len(self._buffer)
            if self._buffer:
                log.warning("state.buffer_restored", decisions=len(self._buffer),
                            path=self._p.spill_path)  # fmt: skip

    @property
    def keys(self) -> keys.Keys:
        return self._keys

    @property
    def client(self) -> RedisClient:
        return self._redis

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self._down_until

    # -- the one place redis errors are translated -----------------------------------------
    async def call(self, make: Callable[[], Awaitable[Any]], migrating: bool = False) -> Any:
        """Run one Redis call on a pooled connection; redis errors come out as
        StateUnavailableError. The first call brings the Redis to this store's key layout
        (layout.py; migrating=True: a call of that migration)."""
        if not migrating:
            await self._layout_ready()
        if not self.healthy:
            self.stats.unavailable += 1
            raise StateUnavailableError("redis is unreachable (retrying shortly)")
        # More calls in flight than pooled connections: wait for one (redis-py's pool would
        # raise MaxConnectionsError, a ConnectionError, which is not an outage).
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(self._p.timeout_s):
                    await slots.acquire()
            except TimeoutError:
                self.stats.unavailable += 1
                self.stats.busy += 1
                raise StateUnavailableError(
                    f"all {self._p.max_connections} Redis connections stayed busy for"
                    f" {self._p.timeout_s} s (store.redis.max_connections)"
                ) from None
        else:
            await slots.acquire()  # free: returns at once
        try:
            # No asyncio.timeout around the call: cancelling redis-py mid-handshake leaks the
            # socket. Its own socket_connect_timeout/socket_timeout (= timeout_s) bound each
            # step and clean up after themselves.
            return await self.translate(make)
        finally:
            slots.release()

    async def translate(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Await one Redis call (fail fast while Redis is marked down); redis errors come out
        as StateUnavailableError. The one place they are translated."""
        if not self.healthy:
            self.stats.unavailable += 1
            raise StateUnavailableError("redis is unreachable (retrying shortly)")
        try:
            return await make()
        except MaxConnectionsError as exc:  # the pool is shared (Admin, scripts): still busy
            self.stats.unavailable += 1
            self.stats.busy += 1
            raise StateUnavailableError(f"redis connections are all in use: {exc}") from exc
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
            self._down_until = time.monotonic() + self._p.retry_after_s
            self.stats.unavailable += 1
            raise StateUnavailableError(
                f"redis did not answer within {self._p.timeout_s} s: {exc!r}"
            ) from exc
        except RedisError as exc:  # cluster reshards, OOM, script errors: not our data's fault
            self.stats.unavailable += 1
            raise StateUnavailableError(f"redis refused the call: {exc}") from exc

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """One script call of the hot path (load, record, settle): coalesced with the calls
        of the same loop turn when coalescing is on, else a pooled redis-py call."""
        coalescer = self._coalescer
        if coalescer is None:
            return await self.call(lambda: script(keys=keys, args=args))
        await self._layout_ready()
        return await self.translate(lambda: coalescer.evalsha(script, keys, args))

    async def _layout_ready(self) -> None:
        """Before any call but the migration's: the Redis has this store's key layout
        (layout.py: the first call migrates it), and it was not migrated under a replica
        with key_layout = "policy"."""
        if not self.layout.ready:
            await self.layout.ensure()
        if self.layout.retired:
            raise StateUnavailableError(MIGRATED)

    async def pipelined(self, commands: Sequence[Callable[[Any], Any]]) -> list[Any]:
        """Plain commands (each a function of a pipeline, e.g. methodcaller("hmget", ...)) in
        one call: one round trip, or one per node of a Cluster (a policy's slots: one
        command each, which must not take a pooled connection each)."""

        async def run() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for command in commands:
                command(pipe)
            return list(await pipe.execute())

        return await self.call(run) if commands else []

    async def _sweep_slots(self, policy: str) -> list[Slot]:
        """slots(policy), reading the tags set again only when it grew (it never shrinks)."""
        cached = self._tag_slots.get(policy)
        if cached is not None and self._keys.per_segment:
            count = await self.call(lambda: self._redis.scard(self._keys.tags(policy)))
            if count == len(cached) - 1:
                return cached
        slots = self._tag_slots[policy] = await self.slots(policy)
        return slots

    def _visit_by(self, slot: Slot, deadline: float) -> None:
        """A decision this replica recorded in a slot: the sweep looks there by its deadline."""
        when = self._next_visit.get(slot)
        if when is not None and deadline < when:
            self._next_visit[slot] = deadline

    async def ping(self) -> bool:
        """Probe Redis (ignoring the fail-fast window); flush buffered decisions when it answers."""
        try:
            await self._redis.ping()
        except MaxConnectionsError:  # every connection is busy with calls: Redis answers them
            return self.healthy
        except (RedisError, TimeoutError, OSError):
            self._down_until = time.monotonic() + self._p.retry_after_s
            return False
        if self._down_until:  # back from an outage: the Redis may be another one now (a
            self.layout.ready = False  # restore, an empty one): check its key layout again
        self._down_until = 0.0
        try:
            await self.layout.ensure(wait_s=LAYOUT_WAIT_S)
            if not await self.layout.still_current():
                return False
            if self._buffer:
                await self._flush()
        except StateUnavailableError:
            return False
        return True

    # -- reads -----------------------------------------------------------------------------
    def _prior(self, spec: ModelSpec) -> ArmState:
        return linear.shared_prior(spec.dim, spec.l2)

    def slot_keys(self, slot: Slot) -> list[str]:
        """KEYS of the scripts on a slot's learned state (forget_segment, the Admin's)."""
        k = self._keys
        return [k.model(slot), k.sums(slot), k.segment_arms(slot)]

    async def slots(self, policy: str) -> list[Slot]:
        """Every slot that may hold the policy's state or decisions: the legacy slot, then
        (per-segment layout) the slot of each tag in the policy's tags set."""
        legacy = self._keys.legacy(policy)
        if not self._keys.per_segment:
            return [legacy]
        tags = await self.call(lambda: self._redis.smembers(self._keys.tags(policy)))
        return [legacy, *(self._keys.slot(policy, t.decode()) for t in sorted(tags))]

    async def load(
        self, key: ModelKey, arms: Sequence[ArmId], spec: ModelSpec, for_route: bool = False
    ) -> ModelSnapshot:
        """One round trip (load.lua): the stamps, and the sums of arms whose stamp moved.
        (Rarely two: see _load_once's `skip`.) For a Route to a segment this replica has not
        registered lately, with a segment limit that refuses, the registry's answer in a
        second call alongside."""
        cache = self._cache.pop(key, None)  # re-inserted last: the dict's order is recency
        if cache is None:
            cache = {}
        self._cache[key] = cache
        settling = self._settling
        skip = {arm for arm in arms if (key, arm) in settling} if settling else set()
        limit = spec.max_segments if for_route and not spec.evict_lru else 0
        try:
            version, states, stale = await self._load_once(key, arms, spec, limit, cache, skip)
            if stale:  # moved by more than this replica's own settles: fetch them after all
                _, fresh, _ = await self._load_once(key, stale, spec, 0, cache, set())
                states.update(fresh)
        except StateUnavailableError:
            return self._degraded(key, arms, spec)
        self._trim_cache()
        self._versions[key] = version
        return ModelSnapshot(states, version)

    async def _load_once(
        self,
        key: ModelKey,
        arms: Sequence[ArmId],
        spec: ModelSpec,
        limit: int,
        cache: dict[ArmId, _Cached],
        skip: set[ArmId],
    ) -> tuple[int, dict[ArmId, ArmState], list[ArmId]]:
        """One load.lua call: (version, states, stale arms).

        Arms in `skip` have a settle of this replica's in flight. Over the coalescer's one
        connection that settle ran before this load and its reply, read first, moves the
        cache (_absorb) before this reply is looked at; so their sums are not asked for, and
        only if the cache then still lags the stamp Redis reported (another replica changed
        the arm too, or a decay epoch passed) are they returned as stale, to fetch. Asking
        for them every time made a Route under load fetch most candidates' sums (about 50 kB
        per Route+Feedback at d=32, K=16, 64 in flight) only to drop them."""
        held = ",".join([
            SKIP_STAMP if arm in skip
            else str(c.stamp) if (c := cache.get(arm)) is not None and c.state.l2 == spec.l2
            else "-1"
            for arm in arms
        ])  # fmt: skip
        slot = self._keys.segment_slot(key.policy, key.segment)
        k = [self._keys.model(slot), self._keys.sums(slot)]
        args = [*self._load_fields(key.segment, tuple(arms)), held]
        if limit and not self._registered(key.policy, key.segment, self._now(), spec):
            registry = [self._keys.segments(key.policy)]
            full, reply = await _together(
                self.run(self._full, registry, [key.segment, str(limit)]),
                self.run(self._load, k, args),
            )
            if full:
                raise segment_limit_error(key, spec, int(full))
        else:
            reply = await self.run(self._load, k, args)
        if reply[0] == b"migrated":  # key_layout = "policy" after the migration (layout.py)
            raise StateUnavailableError(MIGRATED)
        version_raw, fp_raw, stamps_raw, blobs = reply
        if fp_raw is not None:
            check_fingerprint(key, fp_raw.decode(), spec)
        prior = self._prior(spec)
        states: dict[ArmId, ArmState] = {}
        stale: list[ArmId] = []
        fetched = False
        for arm, stamp, blob in zip(arms, stamps_raw, blobs, strict=True):
            if stamp is None:
                self._cache_put(cache, arm, None)
                states[arm] = prior
                continue
            if blob is not None:
                fetched = True
                self.stats.bytes_in += len(blob)
                current = cache.get(arm)
                # A settle of this replica's may have brought the cache to this stamp while
                # the load was in flight (_absorb): then there is nothing to refactorise.
                if current is None or current.stamp != int(stamp) or current.state.l2 != spec.l2:
                    sums = codec.decode_sums(blob)
                    try:
                        state = linear.from_sums(sums.s, sums.b, sums.n, spec.l2)
                    except linear.UnsafeUpdateError as exc:
                        raise FailedPreconditionError(
                            f"the stored sums of {key.policy!r}/{key.segment!r} arm {arm!r} are"
                            f" unusable ({exc}); export them for a look, then delete the segment"
                            " or reset the policy"
                        ) from None
                    self._cache_put(cache, arm, _Cached(sums.stamp, state))
                    self.stats.refactorised += 1
            cached = cache.get(arm)
            if arm in skip and (
                cached is None or cached.stamp < int(stamp) or cached.state.l2 != spec.l2
            ):
                stale.append(arm)
            states[arm] = cached.state if cached is not None else prior
        if fetched:
            self.stats.fetches += 1
        return int(version_raw or 0), states, stale

    def _load_fields(self, segment: str, arms: tuple[ArmId, ...]) -> tuple[str, str, str, str]:
        """load.lua's field arguments for (segment, candidates), built once per candidate list."""
        fields = self._fields.get((segment, arms))
        if fields is None:
            fields = (
                keys.version_field(segment),
                keys.fingerprint_field(segment),
                "\n".join(keys.stamp_field(segment, arm) for arm in arms),
                "\n".join(keys.sums_field(segment, arm) for arm in arms),
            )
            if len(self._fields) >= MAX_FIELD_LISTS:
                self._fields.pop(next(iter(self._fields)))
            self._fields[(segment, arms)] = fields
        return fields

    def _degraded(self, key: ModelKey, arms: Sequence[ArmId], spec: ModelSpec) -> ModelSnapshot:
        """The last cached states (the prior for arms never seen), flagged degraded."""
        self.stats.degraded_loads += 1
        cache = self._cache.get(key, {})
        prior = self._prior(spec)
        states = {arm: (c.state if (c := cache.get(arm)) else prior) for arm in arms}
        return ModelSnapshot(states, self._versions.get(key, 0), degraded=True)

    # -- record ------------------------------------------------------------------------------
    def _pending_args(self, d: PendingDecision) -> tuple[list[str], list[bytes | str]]:
        ttl_s = max(d.deadline - d.created_at, 0.0) + self._p.pending_grace_s + 1.0
        fields: dict[str, bytes | str] = {
            "segment": d.segment,
            "arm": d.arm,
            "x": codec.encode_vector(d.x),
            "propensity": codec.encode_f64(d.propensity),
            "model_version": str(d.model_version),
            "created_at": codec.encode_f64(d.created_at),
            "deadline": codec.encode_f64(d.deadline),
            "sums_field": keys.sums_field(d.segment, d.state_arm),
            "version_field": keys.version_field(d.segment),
            "fingerprint_field": keys.fingerprint_field(d.segment),
            "stamp_field": keys.stamp_field(d.segment, d.state_arm),
        }
        # A buffered decision's first record may have landed under its plain id (record.lua).
        plain = ids.plain_id(d.decision_id)
        buffered = plain != d.decision_id
        args: list[bytes | str] = [
            d.decision_id, repr(d.deadline), str(math.ceil(ttl_s * 1e3)), repr(d.created_at),
            plain if buffered else "", str(math.ceil(self._p.tombstone_ttl_s * 1e3)),
        ]  # fmt: skip
        for name, value in fields.items():
            args += [name, value]
        slot = self._keys.decision_slot(d.decision_id)
        k = [
            self._keys.pending(d.decision_id, slot),
            self._keys.tombstone(d.decision_id, slot),
            self._keys.deadlines(slot),
        ]
        if buffered:
            k += [self._keys.pending(plain, slot), self._keys.tombstone(plain, slot)]
        return k, args

    async def _record_one(self, decision: PendingDecision, spec: ModelSpec | None = None) -> None:
        await self._register_slot(decision.policy, ids.tag_of(decision.decision_id))
        k, args = self._pending_args(decision)
        record = self.run(self._record, k, args)
        self._visit_by(self._keys.decision_slot(decision.decision_id), decision.deadline)
        if self._registered(decision.policy, decision.segment, decision.created_at, spec):
            await record
            return
        evicted, _ = await _together(
            self._register_segment(decision.policy, decision.segment, decision.created_at, spec),
            record,
        )
        if evicted:
            await self._forget_states(decision.policy, evicted)

    # -- the policy-wide keys: updated beside the per-slot scripts ---------------------------
    async def _register_slot(self, policy: str, tag: str | None) -> None:
        """Before anything is written in a slot: its policy in the policies set, its tag in
        the policy's tags set (the sweep and the Admin find the slot there). Once per replica."""
        if policy not in self._known_policies:
            await self.call(lambda: self._redis.sadd(self._keys.policies(), policy))
            self._known_policies.add(policy)
        if tag is not None and self._keys.per_segment and (policy, tag) not in self._known_tags:
            await self.call(lambda: self._redis.sadd(self._keys.tags(policy), tag))
            self._known_tags.add((policy, tag))

    @staticmethod
    def _refresh_s(spec: ModelSpec | None) -> float:
        ttl = spec.segment_ttl_s if spec is not None else 0.0
        return min(REFRESH_S, ttl / 10) if ttl else REFRESH_S

    def _registered(
        self, policy: str, segment: str, at: float, spec: ModelSpec | None
    ) -> bool:  # fmt: skip
        """Whether this replica registered the segment less than its refresh time ago."""
        when = self._touched.get((policy, segment))
        return when is not None and 0.0 <= at - when < self._refresh_s(spec)

    async def _register_segment(
        self, policy: str, segment: str, at: float, spec: ModelSpec | None
    ) -> list[str]:
        """Register the segment as used at `at` (touch.lua); with a spec that evicts at its
        limit, unregister the least recently used to make room: returned, for the caller to
        forget their state."""
        evict_at = spec.max_segments if spec is not None and spec.evict_lru else 0
        refresh = self._refresh_s(spec)
        args = [segment, repr(at), str(evict_at), repr(refresh)]
        evicted = await self.run(self._touch, [self._keys.segments(policy)], args)
        touched = self._touched
        touched[(policy, segment)] = max(at, touched.pop((policy, segment), at))
        if len(touched) > MAX_TOUCHED:
            touched.pop(next(iter(touched)))
        gone = [raw.decode() for raw in evicted]
        for name in gone:
            touched.pop((policy, name), None)
        return gone

    def forget_registrations(self, policy: str) -> None:
        """Forget which of the policy's segments this replica registered lately (its registry
        was just deleted here: ResetPolicy), so its next Routes register them again."""
        for key in [key for key in self._touched if key[0] == policy]:
            del self._touched[key]

    async def _forget_states(self, policy: str, segments: Sequence[str]) -> int:
        """Forget these segments' learned state, each in its slot, FORGET_AT_ONCE at a time
        (an idle-expiry sweep may forget hundreds). Returns how many had any."""
        had = 0
        for start in range(0, len(segments), FORGET_AT_ONCE):
            calls = [
                self.call(partial(self._forget, keys=self.slot_keys(self._keys.segment_slot(
                    policy, segment)), args=[segment]))
                for segment in segments[start : start + FORGET_AT_ONCE]
            ]  # fmt: skip
            had += sum(int(one) for one in await _together(*calls))
        return had

    async def record(self, decision: PendingDecision, spec: ModelSpec | None = None) -> DecisionId:
        """Log the decision in Redis; while Redis is down, in a bounded local buffer under a
        buffered id (feedback/ids.py), which is returned. (A buffered decision registers its
        segment when flushed, without evicting: it was acknowledged, so it is not refused.)"""
        try:
            await self._record_one(decision, spec)
            if self._ordered:
                routed = self._routed
                if len(routed) >= MAX_ROUTED:
                    del routed[next(iter(routed))]
                routed[decision.decision_id] = (decision.key, decision.state_arm)
        except StateUnavailableError:
            self._expire_buffer()
            if len(self._buffer) >= self._p.max_buffered:
                self.stats.unrecorded += 1
                log.warning("state.decision_unrecorded", decision_id=decision.decision_id)
                return decision.decision_id
            at = decision.created_at
            decision = dataclasses.replace(
                decision, decision_id=ids.buffered_id(decision.decision_id, at)
            )
            self._buffer[decision.decision_id] = decision
            self.stats.buffered = len(self._buffer)
        return decision.decision_id

    def _expire_buffer(self) -> None:
        """Give up buffered decisions older than buffer_max_age_s (other replicas stop telling
        their callers to retry at that age, so flushing them later would break that promise)."""
        oldest = self._now() - self._p.buffer_max_age_s
        buffer = self._buffer
        while buffer:  # oldest first (insertion order): stop at the first young one
            decision_id, decision = next(iter(buffer.items()))
            if decision.created_at >= oldest:
                break
            del buffer[decision_id]
            self.stats.buffer_expired += 1
            log.warning("state.buffer_expired", decision_id=decision_id)
        self.stats.buffered = len(buffer)

    async def _flush(self) -> None:
        async with self._flush_lock:
            self._expire_buffer()
            for decision_id, decision in list(self._buffer.items()):
                await self._record_one(decision)
                self._buffer.pop(decision_id, None)
            self.stats.buffered = len(self._buffer)
            if self._spill is not None:
                self._spill.remove()  # everything it held is in Redis now

    # -- settle / expire ----------------------------------------------------------------------
    def _spec_args(self, spec: ModelSpec, now: float) -> list[bytes | str]:
        epoch = math.floor(now / spec.decay_interval_s)
        default = b"" if spec.default_reward is None else codec.encode_f64(spec.default_reward)
        return [
            default,
            codec.encode_f64(spec.decay_factor),
            str(epoch),
            spec.fingerprint,
            str(spec.dim),
            codec.HEADER.pack(codec.MAGIC, codec.FORMAT_VERSION, codec.KIND_SUMS, spec.dim),
            str(math.ceil(self._p.tombstone_ttl_s * 1e3)),
        ]

    def _settle_keys(self, decision_id: DecisionId, slot: Slot) -> list[str]:
        k = self._keys
        return [
            k.pending(decision_id, slot), k.tombstone(decision_id, slot), k.model(slot),
            k.sums(slot), k.deadlines(slot), k.segment_arms(slot),
        ]  # fmt: skip

    async def _settle_in(
        self, slot: Slot, policy: str, args: list[bytes | str], now: float
    ) -> list[Any]:
        """settle.lua on the decision's slot (args: its ARGV, the decision id first). A reward
        that gave an arm its first state registers the segment (it may have been forgotten
        while the decision was pending; a failure to is logged, the reward stands)."""
        decision_id = str(args[0])
        k = self._settle_keys(decision_id, slot)
        reply: list[Any] = await self.run(self._settle, k, args)
        if len(reply) > 7 and reply[7] == b"-1":  # the arm had no state: the previous stamp
            segment = reply[5].decode()
            if not self._registered(policy, segment, now, None):
                registry = self._keys.segments(policy)
                try:
                    await self.call(lambda: self._redis.zadd(registry, {segment: now}, nx=True))
                except StateUnavailableError as exc:
                    log.warning("state.segment_unregistered", policy=policy, segment=segment,
                                error=str(exc))  # fmt: skip
        return reply

    async def _settle_legacy(
        self, decision_id: DecisionId, policy: str, args: list[bytes | str], now: float
    ) -> list[Any]:
        """Settle an untagged decision id (layout.py): read it where it is (the legacy slot);
        if it is pending there, move it to its segment's slot, then settle it there."""
        k, legacy = self._keys, self._keys.legacy(policy)
        lk = [k.pending(decision_id, legacy), k.tombstone(decision_id, legacy), k.deadlines(legacy)]
        mode, now_raw = args[1], args[3]
        peek = await self.run(self.layout.peek, lk, [decision_id, mode, now_raw])
        head = peek[0]
        if head == b"moved":
            slot = k.slot(policy, peek[1].decode())
            reply = await self._settle_in(slot, policy, args, now)
            plain = ids.plain_id(decision_id)
            if reply[0] == b"unknown" and plain != decision_id:
                # A buffered id whose flush found its plain copy moved (record.lua gave it the
                # plain id's `moved` tombstone): the decision is that copy.
                reply = await self._settle_in(slot, policy, [plain, *args[1:]], now)
            return reply
        if head != b"pending":
            return list(peek)
        pttl, flat = int(peek[1]), peek[2]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        tag = ids.segment_tag(fields[b"segment"].decode())
        slot = k.slot(policy, tag)
        await self._register_slot(policy, tag)
        deadline = codec.decode_f64(fields[b"deadline"])
        ttl_ms = pttl if pttl > 0 else math.ceil((self._p.pending_grace_s + 1.0) * 1e3)
        tomb_ms = str(math.ceil(self._p.tombstone_ttl_s * 1e3))
        rk = [k.pending(decision_id, slot), k.tombstone(decision_id, slot), k.deadlines(slot)]
        adopt = [decision_id, repr(deadline), str(ttl_ms), repr(now), "", tomb_ms, *flat]
        await self.run(self._record, rk, adopt)
        self._visit_by(slot, deadline)
        await self.run(self.layout.retire, lk, [decision_id, tag, tomb_ms, now_raw])
        return await self._settle_in(slot, policy, args, now)

    async def _settle_any(
        self, decision_id: DecisionId, policy: str, args: list[bytes | str], now: float,
        found_in: Slot | None = None,
    ) -> list[Any]:  # fmt: skip
        """settle.lua for a decision, wherever it is (found_in: the slot whose deadline index
        listed it)."""
        if self._keys.is_legacy_id(decision_id):
            legacy = self._keys.legacy(policy)
            if found_in is None or found_in == legacy:
                return await self._settle_legacy(decision_id, policy, args, now)
            return await self._settle_in(found_in, policy, args, now)  # moved there already
        return await self._settle_in(self._keys.decision_slot(decision_id), policy, args, now)

    async def settle(
        self, decision_id: DecisionId, reward: float, now: float, spec: ModelSpec
    ) -> Settlement:
        try:
            policy = keys.policy_of(decision_id)
        except ValueError:
            return Settlement(Outcome.UNKNOWN, decision_id)
        buffered = self._buffer.get(decision_id)
        if buffered is not None:  # recorded while Redis was down: record it first
            await self._record_one(buffered)
            self._buffer.pop(decision_id, None)
            self.stats.buffered = len(self._buffer)
        args: list[bytes | str] = [
            decision_id, "feedback", codec.encode_f64(reward), codec.encode_f64(now),
        ]  # fmt: skip
        args += self._spec_args(spec, now)
        where = self._routed.pop(decision_id, None) if self._ordered else None
        settling = self._settling
        if where is not None:  # a load issued from now on need not fetch this arm
            settling[where] = settling.get(where, 0) + 1
        try:
            reply = await self._settle_any(decision_id, policy, args, now)
            settled = self._settlement(reply, decision_id, policy, spec)  # (absorbs it)
        finally:
            if where is not None:
                if settling[where] == 1:
                    del settling[where]
                else:
                    settling[where] -= 1
        if settled.outcome is Outcome.UNKNOWN:
            self._check_not_buffered_elsewhere(decision_id, now)
            if not self._keys.per_segment and ids.tag_of(decision_id) is not None:
                # Issued by a replica with the per-segment layout (this one issues untagged
                # ids): while key_layout changes from "policy" to "segment", retry there.
                raise StateUnavailableError(
                    f"decision {shown(decision_id)} was routed by a replica with"
                    " store.redis.key_layout = 'segment' and this one has 'policy'; retry"
                )
        return settled

    def _check_not_buffered_elsewhere(self, decision_id: DecisionId, now: float) -> None:
        """StateUnavailableError (retry) for a decision another replica buffered during an
        outage and may still flush: until buffer_max_age_s after it was buffered (plus a clock
        skew margin), its reward must not get a final NOT_FOUND."""
        at = ids.buffered_at(decision_id)
        if at is None:
            return
        until = at + self._p.buffer_max_age_s + CLOCK_SKEW_S
        if at - CLOCK_SKEW_S <= now < until:
            raise StateUnavailableError(
                f"decision {shown(decision_id)} was routed while Redis was unreachable and the"
                " replica that routed it has not written it to Redis yet; retry (it is joinable"
                f" once flushed; retries are answered so until unix time {until:.0f})"
            )

    async def expire(
        self, now: float, limit: int, specs: Mapping[str, ModelSpec]
    ) -> list[Settlement]:
        """Per policy: read due ids from the deadline index, settle each in its own script."""
        stored = await self.call(lambda: self._redis.smembers(self._keys.policies()))
        policies = sorted(set(specs) | {p.decode() for p in stored})
        done: list[Settlement] = []
        for policy in policies:
            if len(done) >= limit:
                break
            done += await self._expire_policy(policy, now, limit - len(done), specs.get(policy))
        for policy, spec in specs.items():
            # Idle TTLs are days long: a look once a minute per policy is plenty (the sweep
            # runs every second, and this costs a round trip per policy).
            if spec.segment_ttl_s and now - self._pruned_at.get(policy, -math.inf) >= PRUNE_EVERY_S:
                self._pruned_at[policy] = now
                await self._prune_segments(policy, now - spec.segment_ttl_s, limit)
        return done

    async def _prune_segments(self, policy: str, cutoff: float, limit: int) -> None:
        """Forget segments not used since `cutoff` (prune.lua on the registry, then each one's
        state in its slot), at most `limit` per call."""
        args = [repr(cutoff), str(limit)]
        raw = await self.call(partial(self._prune, keys=[self._keys.segments(policy)], args=args))
        gone = [name.decode() for name in raw]
        if gone:
            for name in gone:
                self._touched.pop((policy, name), None)
            await self._forget_states(policy, gone)
            self.stats.expired_segments += len(gone)
            log.info("state.segments_expired", policy=policy, segments=len(gone))

    async def segments(self, policy: str) -> list[SegmentInfo]:
        k = self._keys
        raw = await self.call(
            lambda: self._redis.zrange(k.segments(policy), 0, -1, desc=True, withscores=True)
        )
        names = [name.decode() for name, _ in raw]
        if not names:
            return []
        by_slot: dict[Slot, list[str]] = {}
        for name in names:
            by_slot.setdefault(k.segment_slot(policy, name), []).append(name)
        slots = list(by_slot)
        replies = await self.pipelined([
            *(methodcaller("hmget", k.segment_arms(slot), by_slot[slot]) for slot in slots),
            *(methodcaller("hmget", k.model(slot), [keys.version_field(n) for n in by_slot[slot]])
              for slot in slots),
        ])  # fmt: skip
        index: dict[str, bytes | None] = {}
        versions: dict[str, bytes | None] = {}
        for i, slot in enumerate(slots):
            index.update(zip(by_slot[slot], replies[i], strict=True))
            versions.update(zip(by_slot[slot], replies[len(slots) + i], strict=True))
        return [
            SegmentInfo(name, float(score), arms.count(b"\n") + 1 if (arms := index[name]) else 0,
                        int(versions[name] or 0))
            for name, (_, score) in zip(names, raw, strict=True)
        ]  # fmt: skip

    async def delete_segment(self, policy: str, segment: str) -> bool:
        """Forget the segment's state (in its slot), then unregister it (in the policy's)."""
        had = await self._forget_states(policy, [segment])
        registry = self._keys.segments(policy)
        registered = await self.call(lambda: self._redis.zrem(registry, segment))
        self._touched.pop((policy, segment), None)
        return bool(had or registered)

    async def _expire_policy(
        self, policy: str, now: float, limit: int, spec: ModelSpec | None
    ) -> list[Settlement]:
        """Due decisions from the slots' deadline indexes (one pipelined read of the slots
        that may have any), each settled in its own script."""
        legacy = self._keys.legacy(policy)
        visit = [
            slot for slot in await self._sweep_slots(policy)
            if slot == legacy or self._next_visit.get(slot, -math.inf) <= now
        ]  # fmt: skip
        found = await self.pipelined([
            methodcaller("zrange", self._keys.deadlines(slot), 0, limit, withscores=True)
            for slot in visit
        ])  # fmt: skip
        # A slot with nothing due needs no look before its next deadline, nor (whatever is
        # recorded meanwhile, by any replica) before a wait window from now, less clock skew.
        wait = spec.reward_wait_s if spec is not None else 0.0
        horizon = now + min(max(wait - CLOCK_SKEW_S, 0.0), MAX_VISIT_GAP_S)
        due: list[tuple[Slot, bytes]] = []
        for slot, entries in zip(visit, found, strict=True):
            due += [(slot, raw) for raw, score in entries if score < now]
            later = [score for _, score in entries if score >= now]
            if later and entries[0][1] >= now:
                self._next_visit[slot] = min(later[0], horizon)
            elif not entries:
                self._next_visit[slot] = horizon
            else:  # something was due: look again at the next sweep
                self._next_visit.pop(slot, None)
        due = due[:limit]
        legacy_slot = legacy if self._keys.per_segment else None
        mode = "expire" if spec is not None else "orphan"
        spec_args = self._spec_args(spec or ModelSpec(dim=1), now)
        replies: list[Any] = [None] * len(due)
        together: dict[int, Awaitable[list[Any]]] = {}
        for i, (slot, raw) in enumerate(due):
            decision_id = raw.decode()
            args: list[bytes | str] = [decision_id, mode, b"", codec.encode_f64(now), *spec_args]
            settle = self._settle_any(decision_id, policy, args, now, found_in=slot)
            if slot == legacy_slot:  # an untagged id, moved then settled: in deadline order
                replies[i] = await settle
            else:
                together[i] = settle
        for i, reply in zip(together, await asyncio.gather(*together.values()), strict=True):
            replies[i] = reply
        done: list[Settlement] = []
        for (_, raw), reply in zip(due, replies, strict=True):
            head = reply[0].decode()
            if head == "lost":
                self.stats.lost_pending += 1
                log.warning("state.pending_lost", decision_id=raw.decode())
            if head not in ("lost", "skip"):
                done.append(self._settlement(reply, raw.decode(), policy, spec))
        return done

    def _settlement(
        self, reply: list[Any], decision_id: DecisionId, policy: str, spec: ModelSpec | None
    ) -> Settlement:
        head = reply[0].decode()
        if head == "error":
            code, detail = reply[1].decode(), reply[2].decode()
            if code == "fingerprint" and spec is not None:
                check_fingerprint(ModelKey(policy), detail, spec)
            if code == "migrated":
                raise StateUnavailableError(MIGRATED)
            if code == "nonfinite":
                self.stats.refused_updates += 1
                raise UpdateRefusedError(
                    f"decision {decision_id!r}: its reward would make the stored sums of"
                    f" {policy!r} {detail!r} non-finite; nothing was changed and the decision"
                    " stays pending"
                )
            raise StateUnavailableError(
                f"decision {decision_id!r}: stored model has dimension/shape {detail!r} that"
                " the decision's vector does not match; was the policy's pipeline changed?"
            )
        outcome = Outcome(head)
        arm = reply[1].decode()
        reward = codec.decode_f64(reply[2]) if reply[2] else None
        version = int(reply[3])
        settled_at = codec.decode_f64(reply[4]) if reply[4] else 0.0
        if outcome is Outcome.UNKNOWN:
            return Settlement(outcome, decision_id)
        if reply[5] is None:  # answered from a tombstone
            return Settlement(
                outcome, decision_id, arm, reward=reward, model_version=version,
                settled_at=settled_at,
            )  # fmt: skip
        segment = reply[5].decode()
        if len(reply) > 6 and reward is not None and spec is not None:
            self._absorb(ModelKey(policy, segment), reward, reply[6:10], spec)
        return Settlement(outcome, decision_id, arm, policy, segment, reward, version, settled_at)

    def _absorb(self, key: ModelKey, reward: float, delta: list[Any], spec: ModelSpec) -> None:
        """Add a reward this replica settled to its cached arm, as the script added it to the
        sums, if the cache holds exactly the sums it was added to (the stamp before). The
        next Route then needs no fetch and no refactorisation for that arm: S and b stay
        bit for bit what Redis holds, A⁻¹ moves by Sherman–Morrison as in the memory store."""
        x_blob, prev_raw, stamp, field = delta
        cache = self._cache.get(key)
        arm = keys.arm_of_stamp_field(key.segment, field.decode())
        if cache is None or arm is None:
            return
        prev, cached = int(prev_raw), cache.get(arm)
        if cached is None:
            if prev != -1:  # trained elsewhere before: this replica does not hold the base
                return
            base = self._prior(spec)
        elif cached.stamp != prev or cached.state.l2 != spec.l2:
            return
        else:
            base = cached.state
        x = codec.decode_vector(x_blob)
        if x.shape[0] != base.dim:
            return
        try:
            self._cache_put(cache, arm, _Cached(int(stamp), linear.update(base, x, reward)))
        except linear.UnsafeUpdateError:  # the next load refetches the sums Redis holds
            self._cache_put(cache, arm, None)
            return
        self.stats.absorbed += 1

    def _cache_put(self, cache: dict[ArmId, _Cached], arm: ArmId, entry: _Cached | None) -> None:
        """Set (or with None, drop) one cached arm state, keeping the byte count."""
        old = cache.pop(arm, None)
        if old is not None:
            self._cache_bytes -= old.state.nbytes
        if entry is not None:
            cache[arm] = entry
            self._cache_bytes += entry.state.nbytes

    def _trim_cache(self) -> None:
        """Forget least recently loaded models while the cache holds over cache_bytes (or
        max_cached_models), never the model just loaded (the last)."""
        while len(self._cache) > 1 and (
            self._cache_bytes > self._p.cache_bytes or len(self._cache) > self._p.max_cached_models
        ):
            oldest = self._cache.pop(next(iter(self._cache)))
            self._cache_bytes -= sum(c.state.nbytes for c in oldest.values())

    async def close(self) -> None:
        """Flush the outage buffer if Redis answers; spill what remains to spill_path."""
        if self._buffer:
            with contextlib.suppress(StateUnavailableError):
                await self._flush()
        if self._buffer and self._spill is not None:
            self._spill.write(self._buffer.values())
            self.stats.spilled = len(self._buffer)
            log.warning("state.buffer_spilled", decisions=len(self._buffer),
                        path=self._p.spill_path)  # fmt: skip
        elif self._buffer:
            log.warning("state.buffer_lost", decisions=len(self._buffer),
                        hint="set store.redis.spill_path to keep them across restarts")  # fmt: skip
        if self._coalescer is not None:
            await self._coalescer.aclose()
        await self._redis.aclose()
