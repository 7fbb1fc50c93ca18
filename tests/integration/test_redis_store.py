"""Contract: the Redis store settles, expires and learns exactly as the in-memory store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditd.errors import FailedPreconditionError, StateUnavailableError, UpdateRefusedError
from banditd.feedback import ids
from banditd.state import codec
from banditd.state.connection import RedisConnection, connect
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_store import RedisModelStore, RedisStoreParams
from banditd.types import ModelKey, ModelSpec, ModelStore, Outcome, PendingDecision

T0 = 1_700_000_000.0
SPEC = ModelSpec(dim=3, l2=1.0, default_reward=0.0, fingerprint="fp1")
DROP = ModelSpec(dim=3, l2=1.0, default_reward=None, fingerprint="fp1")
DECAY = ModelSpec(dim=3, l2=2.0, decay_factor=0.5, decay_interval_s=10.0, default_reward=0.25,
                  fingerprint="fp1")  # fmt: skip


async def redis_store(url: str, flush: bool = True, **params: Any) -> RedisModelStore:
    """A store on `url`; flush=False: another replica of the data already there."""
    store = RedisModelStore(
        connect(RedisConnection(url, timeout_s=2.0)), RedisStoreParams(**params)
    )
    if flush:
        await store.client.flushdb()
    return store


@pytest.fixture
async def rstore(redis_url: str) -> AsyncIterator[RedisModelStore]:
    store = await redis_store(redis_url)
    yield store
    await store.close()


def did(i: int, policy: str = "p", segment: str = "") -> str:
    """Decision id number i, as Route issues them: tagged with its segment's tag."""
    return f"{policy}:{ids.segment_tag(segment)}-{i:04x}"


def untag(decision_id: str) -> str:
    """The same id in the untagged form (issued before segment tags: layout.py)."""
    policy, _, rest = decision_id.rpartition(":")
    return f"{policy}:{rest[4:]}" if ids.tag_of(decision_id) else decision_id


def pending(i: int, arm: str, x: list[float], at: float, wait: float = 10.0, policy: str = "p",
            segment: str = "") -> PendingDecision:  # fmt: skip
    return PendingDecision(did(i, policy, segment), policy, segment, arm, np.array(x), 0.5, 0,
                           at, at + wait)  # fmt: skip


# (op, args...) rows; the same table runs against both stores.
TABLE: list[tuple[Any, ...]] = [
    ("record", pending(1, "a", [1.0, 0.5, -0.25], T0)),
    ("record", pending(2, "b", [1.0, -1.0, 2.0], T0)),
    ("record", pending(3, "a", [1.0, 0.25, 0.75], T0, segment="s1")),
    ("record", pending(4, "c", [1.0, 2.0, 0.0], T0, wait=5.0)),
    ("record", pending(5, "b", [1.0, 0.5, 0.5], T0, wait=5.0)),
    ("settle", did(1), 1.0, T0 + 1, SPEC),  # applied
    ("settle", did(1), 0.5, T0 + 2, SPEC),  # duplicate
    ("settle", did(0xFFFF), 1.0, T0 + 2, SPEC),  # unknown
    ("settle", did(3, segment="s1"), 0.75, T0 + 3, SPEC),  # applied, other segment
    ("expire", T0 + 4, 10, {"p": SPEC}),  # nothing due yet
    ("expire", T0 + 6, 10, {"p": SPEC}),  # 4 and 5 defaulted
    ("settle", did(4), 1.0, T0 + 7, SPEC),  # expired (tombstone)
    ("settle", did(2), 1.0, T0 + 11, SPEC),  # expired on arrival: default applied
    ("settle", did(2), 1.0, T0 + 12, SPEC),  # expired (tombstone)
    ("load", "", ["a", "b", "c", "z"], SPEC),
    ("load", "s1", ["a", "b"], SPEC),
    ("record", pending(6, "a", [1.0, 1.0, 1.0], T0 + 20)),
    ("record", pending(7, "b", [1.0, 1.0, 1.0], T0 + 20)),
    ("expire", T0 + 40, 1, {"p": DROP}),  # limit 1: only 6 is dropped
    ("expire", T0 + 40, 10, {}),  # policy gone: 7 is dropped without a model update
    ("load", "", ["a", "b"], SPEC),
    # decay: epochs of 10 s; updates at epoch k and k+2 decay the first by 0.5**2
    ("record", pending(8, "d", [1.0, 0.5, 0.5], T0, wait=100.0, policy="q")),
    ("record", pending(9, "d", [1.0, -0.5, 0.25], T0, wait=100.0, policy="q")),
    ("record", pending(10, "d", [0.5, 0.5, 0.5], T0, wait=1.0, policy="q")),
    ("settle", did(8, "q"), 1.0, T0 + 1, DECAY),
    ("settle", did(9, "q"), -1.0, T0 + 21, DECAY),
    ("expire", T0 + 35, 10, {"q": DECAY}),  # 10 defaulted with 0.25, decayed again
    ("load", "", ["d"], DECAY),
    # shared model: the reward updates the model's single state "*", not the chosen arm's
    (
        "record",
        dataclasses.replace(
            pending(11, "m1", [1.0, 0.5, 0.5], T0 + 50, segment="sh"), model_arm="*"
        ),
    ),
    ("settle", did(11, segment="sh"), 1.0, T0 + 51, SPEC),
    ("load", "sh", ["*", "m1"], SPEC),
]


async def run_table(store: ModelStore, untagged: bool = False) -> list[Any]:
    """The table's answers; untagged: with every decision id in the untagged form."""
    rename = untag if untagged else str
    out: list[Any] = []
    for op, *args in TABLE:
        if op == "record":
            await store.record(
                dataclasses.replace(args[0], decision_id=rename(args[0].decision_id))
            )
        elif op == "settle":
            out.append(await store.settle(rename(args[0]), *args[1:]))
        elif op == "expire":
            out.append(sorted(await store.expire(*args), key=lambda s: s.decision_id))
        else:
            segment, arms, spec = args
            policy = "q" if spec is DECAY else "p"
            snap = await store.load(ModelKey(policy, segment), arms, spec)
            out.append((snap.version, snap.degraded, {
                arm: (st.s.tolist(), st.b.tolist(), st.n, st.a_inv) for arm, st in snap.arms.items()
            }))  # fmt: skip
    return out


@pytest.mark.parametrize("untagged", [False, True], ids=["tagged", "untagged"])
async def test_redis_store_matches_memory_store_on_settle_expire_table(
    rstore: RedisModelStore, untagged: bool
):
    """Same outcomes, versions, sums and counts as the in-memory store, row by row; also with
    untagged decision ids (issued before segment tags: they wait in the policy's own slot and
    move to their segment's when they settle)."""
    want = await run_table(InMemoryModelStore(), untagged)
    got = await run_table(rstore, untagged)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, tuple):
            assert g[:2] == w[:2]
            assert g[2].keys() == w[2].keys()
            for arm in w[2]:
                assert g[2][arm][:3] == w[2][arm][:3], arm  # S, b, n bit for bit
                np.testing.assert_allclose(g[2][arm][3], w[2][arm][3], rtol=1e-9, atol=1e-12)
        else:
            assert g == w


async def test_fingerprint_mismatch_is_refused_by_settle_and_load(rstore: RedisModelStore):
    """State built under another feature pipeline is neither scored nor updated."""
    await rstore.record(pending(1, "a", [1.0, 0.0, 0.0], T0))
    await rstore.record(pending(2, "a", [1.0, 0.0, 0.0], T0))
    await rstore.settle(did(1), 1.0, T0 + 1, SPEC)
    other = ModelSpec(dim=3, fingerprint="fp2")
    with pytest.raises(FailedPreconditionError):
        await rstore.settle(did(2), 1.0, T0 + 1, other)
    with pytest.raises(FailedPreconditionError):
        await rstore.load(ModelKey("p"), ["a"], other)
    applied = await rstore.settle(did(2), 1.0, T0 + 1, SPEC)  # still pending, still joins
    assert applied.model_version == 2


async def test_record_after_settle_does_not_resurrect_decision(rstore: RedisModelStore):
    """A retried record of a settled decision is ignored, so expiry cannot apply it again."""
    d = pending(1, "a", [1.0, 0.0, 0.0], T0)
    await rstore.record(d)
    await rstore.settle(d.decision_id, 1.0, T0 + 1, SPEC)
    await rstore.record(d)
    assert await rstore.expire(T0 + 100, 10, {"p": SPEC}) == []
    snap = await rstore.load(ModelKey("p"), ["a"], SPEC)
    assert snap.arms["a"].n == 1


async def test_pending_that_vanished_is_counted_lost(redis_url: str):
    """A pending decision whose key expired before any sweep ran is reported, not hidden."""
    store = await redis_store(redis_url, pending_grace_s=0.0)
    try:
        d = pending(1, "a", [1.0, 0.0, 0.0], T0, wait=1.0)  # deadline long past: TTL ~ 1 ms
        await store.record(d)
        await store.client.delete(store.keys.pending(d.decision_id))
        assert await store.expire(T0 + 100, 10, {"p": SPEC}) == []
        assert store.stats.lost_pending == 1
    finally:
        await store.close()


async def test_load_fetches_sums_only_for_arms_that_changed(
    rstore: RedisModelStore, redis_url: str
):
    """A second Route with no update in between moves no state over the network; after
    another replica's update, only that arm's sums are fetched."""
    other = await redis_store(redis_url, flush=False)
    try:
        for i, arm in enumerate("abc", start=1):
            await other.record(pending(i, arm, [1.0, 0.5, 0.5], T0))
            await other.settle(did(i), 1.0, T0 + 1, SPEC)
        await rstore.load(ModelKey("p"), ["a", "b", "c"], SPEC)
        fetched = rstore.stats.bytes_in
        await rstore.load(ModelKey("p"), ["a", "b", "c"], SPEC)
        assert rstore.stats.bytes_in == fetched
        await other.record(pending(9, "b", [1.0, 0.5, 0.5], T0))
        await other.settle(did(9), 1.0, T0 + 1, SPEC)
        snap = await rstore.load(ModelKey("p"), ["a", "b", "c"], SPEC)
    finally:
        await other.close()
    assert rstore.stats.bytes_in - fetched == 8 + 8 * (
        3 + 3 + 6
    )  # one arm: header, n/epoch/stamp, b, S upper
    assert snap.arms["b"].n == 2
    assert rstore.stats.absorbed == 0


async def test_own_settle_moves_the_cached_arm_without_a_fetch(
    rstore: RedisModelStore, redis_url: str
):
    """A reward this replica settles updates its cached arm in place: no fetch on the next
    load, S and b bit for bit what a fresh replica reads from Redis, A⁻¹ within rounding.
    A decay epoch, or an update by another replica in between, falls back to a fetch."""
    key, arms = ModelKey("q"), ["a", "b"]

    def pend(i: int, arm: str, x: list[float]) -> PendingDecision:
        return pending(i, arm, x, T0, policy="q")

    await rstore.record(pend(1, "a", [1.0, 0.5, -0.25]))
    await rstore.settle(did(1, "q"), 1.0, T0 + 1, DECAY)  # first reward: the sums are created
    await rstore.load(key, arms, DECAY)  # caches a (fetched) and b (prior)
    fetched = rstore.stats.bytes_in
    for i, (arm, x) in enumerate([("a", [1.0, 2.0, 0.5]), ("b", [1.0, -1.0, 0.25])], start=2):
        await rstore.record(pend(i, arm, x))
        await rstore.settle(did(i, "q"), 0.5 * i, T0 + 2, DECAY)  # same decay epoch
    assert rstore.stats.absorbed == 2  # a on its cached sums, b on the prior
    got = await rstore.load(key, arms, DECAY)
    assert rstore.stats.bytes_in == fetched
    fresh = await redis_store(redis_url, flush=False)
    try:
        want = await fresh.load(key, arms, DECAY)
        for arm in arms:
            g, w = got.arms[arm], want.arms[arm]
            assert (g.n, g.s.tobytes(), g.b.tobytes()) == (w.n, w.s.tobytes(), w.b.tobytes())
            np.testing.assert_allclose(g.a_inv, w.a_inv, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(g.theta, w.theta, rtol=1e-9, atol=1e-12)
        await fresh.record(pend(8, "a", [1.0, 0.0, 1.0]))
        await fresh.settle(did(8, "q"), 1.0, T0 + 3, DECAY)  # another replica moves a
    finally:
        await fresh.close()
    await rstore.record(pend(9, "a", [1.0, 1.0, 1.0]))
    await rstore.settle(did(9, "q"), 1.0, T0 + 3, DECAY)  # cache holds a's older stamp: no absorb
    await rstore.record(pend(10, "b", [1.0, 1.0, 1.0]))
    await rstore.settle(did(10, "q"), 1.0, T0 + 25, DECAY)  # new decay epoch scaled b: no absorb
    assert rstore.stats.absorbed == 2
    got = await rstore.load(key, arms, DECAY)
    assert (got.arms["a"].n, got.arms["b"].n) == (4, 2)
    assert rstore.stats.bytes_in > fetched


async def test_load_does_not_refactorise_an_arm_its_own_settle_already_moved(
    rstore: RedisModelStore, redis_url: str
):
    """Under concurrency a Route's load can be sent before, and answered after, a settle of
    this replica's: its reply carries the arm's new sums although the cache already absorbed
    them. The fetched bytes are then not refactorised (counted, not assumed)."""
    key, arms = ModelKey("p"), ["a"]
    await rstore.record(pending(1, "a", [1.0, 0.5, -0.25], T0))
    await rstore.settle(did(1), 1.0, T0 + 1, SPEC)
    await rstore.load(key, arms, SPEC)  # cache: a at the first stamp
    await rstore.record(pending(2, "a", [1.0, 2.0, 0.5], T0))
    inner = rstore.translate  # (every Redis call goes through it, coalesced or not)

    async def settle_first(make):  # type: ignore[no-untyped-def]
        rstore.translate = inner  # type: ignore[method-assign]
        await rstore.settle(did(2), 0.5, T0 + 2, SPEC)  # runs and is absorbed first
        return await make()  # the load, with the stamp it held before the settle

    rstore.translate = settle_first  # type: ignore[method-assign]
    fetched, refactorised = rstore.stats.bytes_in, rstore.stats.refactorised
    got = await rstore.load(key, arms, SPEC)
    assert rstore.stats.absorbed == 1
    assert rstore.stats.bytes_in > fetched  # the reply did carry the sums
    assert rstore.stats.refactorised == refactorised
    fresh = await redis_store(redis_url, flush=False)
    try:
        want = await fresh.load(key, arms, SPEC)
    finally:
        await fresh.close()
    g, w = got.arms["a"], want.arms["a"]
    assert (g.n, g.s.tobytes(), g.b.tobytes()) == (w.n, w.s.tobytes(), w.b.tobytes())
    np.testing.assert_allclose(g.a_inv, w.a_inv, rtol=1e-9, atol=1e-12)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[tuple[str, list[float], float]]]:
    d = draw(st.integers(1, 6))
    rows = draw(st.lists(st.tuples(st.sampled_from("ab"), st.lists(finite, min_size=d,
                                                                   max_size=d), finite),
                         min_size=1, max_size=12))  # fmt: skip
    return d, rows


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(history=histories(), decay=st.sampled_from([1.0, 0.5, 0.9]))
async def test_lua_arithmetic_equals_numpy_bit_for_bit(redis_url: str, history, decay: float):
    """Arbitrary vectors and rewards: the script's S, b, n equal the memory store's exactly."""
    d, rows = history
    spec = ModelSpec(dim=d, decay_factor=decay, decay_interval_s=1.0, fingerprint="f")
    store = await redis_store(redis_url)
    memory = InMemoryModelStore()
    try:
        for i, (arm, x, r) in enumerate(rows):
            p = pending(i, arm, x, T0)
            now = T0 + i * 0.75  # crosses decay epochs now and then
            for s in (store, memory):
                await s.record(p)
                await s.settle(p.decision_id, r, now, spec)
        got = await store.load(ModelKey("p"), ["a", "b"], spec)
        want = await memory.load(ModelKey("p"), ["a", "b"], spec)
    finally:
        await store.close()
    assert got.version == want.version
    for arm in "ab":
        g, w = got.arms[arm], want.arms[arm]
        assert (g.n, g.s.tobytes(), g.b.tobytes()) == (w.n, w.s.tobytes(), w.b.tobytes())


@pytest.mark.parametrize("d", [40, 100])  # 100: S has 5,050 values, over settle.lua's CHUNK
async def test_lua_bulk_codec_is_exact_at_large_dimensions(redis_url: str, d: int):
    """settle.lua reads and writes the sums in chunks of values per struct call; the chunk
    boundaries change nothing: S, b, n equal the memory store's bit for bit."""
    rng = np.random.default_rng(d)
    spec = ModelSpec(dim=d, fingerprint="f")
    store = await redis_store(redis_url)
    memory = InMemoryModelStore()
    try:
        for i in range(5):
            p = PendingDecision(did(i), "p", "", "a", rng.normal(size=d) * 10.0 ** (i - 2),
                                0.5, 0, T0, T0 + 10)  # fmt: skip
            reward = float(rng.normal())
            for s in (store, memory):
                await s.record(p)
                await s.settle(p.decision_id, reward, T0 + 1, spec)
        other = await redis_store(redis_url, flush=False)  # a replica that fetches the sums
        try:
            got = await other.load(ModelKey("p"), ["a"], spec)
        finally:
            await other.close()
        want = await memory.load(ModelKey("p"), ["a"], spec)
    finally:
        await store.close()
    g, w = got.arms["a"], want.arms["a"]
    assert (g.n, g.s.tobytes(), g.b.tobytes()) == (w.n, w.s.tobytes(), w.b.tobytes())


async def test_more_concurrent_calls_than_connections_queue_instead_of_failing(redis_url: str):
    """A burst wider than the connection pool is not an outage: calls wait for a free
    connection (bounded by timeout_s) instead of failing, and the store stays healthy. (Before
    stop 11 redis-py's MaxConnectionsError, a ConnectionError, marked Redis unreachable: the
    replica answered UNAVAILABLE for retry_after_s and went NOT_SERVING under a traffic burst.)"""
    store = RedisModelStore(
        connect(RedisConnection(redis_url, timeout_s=2.0, max_connections=3)),
        RedisStoreParams(max_connections=3),
    )
    await store.client.flushdb()
    try:
        decisions = [pending(i, "abc"[i % 3], [1.0, 0.5, -0.25], T0) for i in range(60)]
        await asyncio.gather(*(store.record(d) for d in decisions))
        settled = await asyncio.gather(
            *(store.settle(d.decision_id, 1.0, T0 + 1, SPEC) for d in decisions),
            *(store.load(ModelKey("p"), ["a", "b", "c"], SPEC) for _ in range(20)),
        )
        assert await store.ping()
    finally:
        await store.close()
    assert [s.outcome for s in settled[:60]] == [Outcome.APPLIED] * 60
    assert store.stats.unavailable == 0
    assert store.stats.buffered == store.stats.degraded_loads == 0
    assert store.healthy


async def test_a_pool_busy_for_timeout_s_answers_unavailable_and_is_counted(redis_url: str):
    """When every connection stays in use for timeout_s, the call fails fast as UNAVAILABLE
    ("busy"), Redis is not marked down, and the daemon exports it as banditd_store_busy_total."""
    from banditd.config import Settings
    from banditd.server.app import _watch_once, build_daemon

    settings = Settings.model_validate(
        # never the default ports
        {"server": {"listen": "127.0.0.1:0", "metrics_listen": "", "admin_listen": ""},
         "store": {"backend": "redis",
                   "redis": {"url": redis_url, "timeout_s": 1.0, "max_connections": 2}}}
    )  # fmt: skip
    daemon = build_daemon(settings)
    store = daemon.store
    assert isinstance(store, RedisModelStore)
    release = asyncio.Event()
    try:
        holder = asyncio.create_task(store.call(release.wait))  # holds the one call slot
        await asyncio.sleep(0)
        with pytest.raises(StateUnavailableError, match="busy"):
            await store.call(lambda: store.client.ping())
        assert store.healthy
        assert store.stats.busy == 1
        await _watch_once(daemon, store, None, dict.fromkeys(
            ("unavailable", "unrecorded", "lost_pending", "busy"), 0))  # fmt: skip
        assert daemon.metrics.registry.get_sample_value("banditd_store_busy_total") == 1
        release.set()
        await holder
        assert await store.call(lambda: store.client.ping())  # the slot is free again
    finally:
        await store.close()


async def test_settle_script_refuses_an_update_that_would_store_non_finite_sums(
    rstore: RedisModelStore,
) -> None:
    """A pending vector whose outer product overflows (recorded before bounds existed): the
    script writes nothing and answers UpdateRefusedError; the decision stays pending, and the
    sweep drops it rather than retry it forever."""
    await rstore.record(pending(1, "a", [1.0, 2.0, 3.0], T0))
    await rstore.record(pending(2, "a", [1e200, 1.0, 1.0], T0))
    await rstore.settle(did(1), 1.0, T0 + 1, SPEC)
    slot = rstore.keys.segment_slot("p", "")
    before = await rstore.client.hgetall(rstore.keys.sums(slot))
    model = await rstore.client.hgetall(rstore.keys.model(slot))
    with pytest.raises(UpdateRefusedError, match="non-finite"):
        await rstore.settle(did(2), 1.0, T0 + 1, SPEC)
    assert await rstore.client.hgetall(rstore.keys.sums(slot)) == before
    assert await rstore.client.hgetall(rstore.keys.model(slot)) == model
    assert rstore.stats.refused_updates == 1
    assert await rstore.client.exists(rstore.keys.pending(did(2)))
    done = await rstore.expire(T0 + 11, 10, {"p": SPEC})
    assert [s.outcome for s in done] == [Outcome.DROPPED]
    assert await rstore.client.hgetall(rstore.keys.sums(slot)) == before


async def test_load_refuses_stored_sums_that_are_not_finite(
    rstore: RedisModelStore, redis_url: str
) -> None:
    """Sums poisoned before this version (or by hand) give FAILED_PRECONDITION on Route, not a
    NaN score or an unhandled LinAlgError."""
    await rstore.record(pending(1, "a", [1.0, 2.0, 3.0], T0))
    await rstore.settle(did(1), 1.0, T0 + 1, SPEC)
    sums_key = rstore.keys.sums(rstore.keys.segment_slot("p", ""))
    blob = await rstore.client.hget(sums_key, " a")
    sums = codec.decode_sums(blob)
    poisoned = codec.ArmSums(sums.s * np.inf, sums.b, sums.n, sums.epoch, sums.stamp + 1)
    await rstore.client.hset(sums_key, " a", codec.encode_sums(poisoned))
    other = await redis_store(redis_url, flush=False)
    try:
        with pytest.raises(FailedPreconditionError, match="unusable"):
            await other.load(ModelKey("p"), ["a"], SPEC)
    finally:
        await other.close()
