"""Property-based fuzz of every RPC of banditd.v1.Router and banditd.v1.Admin (issue 13).

Hypothesis draws requests for every method, mixing well-formed values with hostile ones
(extreme finite magnitudes, NaN and infinities, unknown names, huge or malformed strings, ids
the daemon issued, ids it did not, raw bytes protobuf cannot parse) and sends them over real
gRPC to an in-process daemon, on the memory store and on a real redis-server. After each one:
- the status is one the README documents (never UNKNOWN or INTERNAL);
- a refused request (any non-OK status) left the stored model bit for bit as it was;
- after an accepted one, every stored model is finite;
and at the end the daemon still routes, learns and answers health SERVING.

`FUZZ_REQUESTS` (env) sets the requests per store (default 5,000: 10,000 in all).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
import redis
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditd.api.v1 import admin_pb2 as apb
from banditd.api.v1 import bandit_pb2 as pb
from banditd.server.app import Daemon, build_daemon
from banditd.state import codec, keys
from banditd.state.memory_store import InMemoryModelStore
from banditd.state.redis_store import RedisModelStore
from tests.integration.conftest import daemon_settings

REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "5000"))
DOCUMENTED = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}  # fmt: skip

POLICIES = {
    "chat": {
        "arms": ["a", "b", "c"],
        "features": {"numeric": ["x1", {"name": "x2", "mean": 10, "std": 5, "min": 0}],
                     "categorical": [{"name": "lang", "vocabulary": ["en", "fr"]}]},
        "reward": {"weights": {"quality": 1.0, "latency_ms": -0.001}},
        "price": {"cost": 1.0, "latency_ms": 0.001},
        "max_segments": 8,
        "paging": {"enabled": True, "capacity_slots": 2, "latency_weight": 0.001,
                   "epoch_steps": 5},
    },
    "strict": {
        "arms": ["a", "b"], "algorithm": "thompson", "out_of_range": "reject",
        "features": {"numeric": ["x1"]}, "reward": {"min": 0, "max": 1},
        "max_segments": 4, "on_segment_limit": "evict_lru",
    },
    "shared": {
        "model": "shared", "arm_features": 2, "allow_new_arms": True, "max_arms": 6,
        "features": {"numeric": ["x1"]}, "max_segments": 4,
    },
}  # fmt: skip
ROUTER = "/banditd.v1.Router/"
ADMIN = "/banditd.v1.Admin/"

# -- strategies -------------------------------------------------------------------------------
extreme = st.sampled_from([
    0.0, -0.0, 1.0, -1.0, 0.5, 8.0, 1e-308, -1e-308, 5e-324, 1e6, -1e6, 1e15, 1e200, -1e200,
    1e308, -1e308, 1.7976931348623157e308, float("nan"), float("inf"), float("-inf"),
])  # fmt: skip
number = st.one_of(extreme, st.floats(allow_nan=True, allow_infinity=True),
                   st.floats(-10, 10))  # fmt: skip
name = st.one_of(
    st.sampled_from(["chat", "strict", "shared", "", "nope", "a b", "{x}", "ch@t", "x" * 65]),
    st.text(max_size=8),
    st.just("p" * 5000),  # (a name too long for a policy, a key or a status message)
)
arm = st.one_of(st.sampled_from(["a", "b", "c", "d", "*", "", "a b", "\x00", "z" * 129]),
                st.text(max_size=6))  # fmt: skip
segment = st.one_of(st.sampled_from(["", "s1", "s2", "s3", "s4", "s5", "a b", "q" * 129]),
                    st.text(max_size=6))  # fmt: skip
feature_name = st.one_of(st.sampled_from(["x1", "x2", "x3", "quality", "latency_ms"]),
                         st.text(max_size=5))  # fmt: skip
numbers = st.dictionaries(feature_name, number, max_size=3)


@st.composite
def contexts(draw: st.DrawFn) -> pb.Context:
    return pb.Context(
        text=draw(st.one_of(st.just(""), st.text(max_size=20))),
        features=draw(numbers),
        categorical=draw(st.dictionaries(st.sampled_from(["lang", "x"]),
                                         st.sampled_from(["en", "fr", "de", ""]), max_size=2)),
        embedding=draw(st.lists(number, max_size=3)),
    )  # fmt: skip


@st.composite
def candidates(draw: st.DrawFn) -> list[pb.Candidate]:
    return [
        pb.Candidate(id=draw(arm), features=draw(st.lists(number, max_size=3)),
                     cost=draw(number), expected_latency_ms=draw(number))
        for _ in range(draw(st.integers(0, 4)))
    ]  # fmt: skip


finite = st.one_of(extreme.filter(math.isfinite), st.floats(-10, 10), st.floats(-1e9, 1e9),
                   st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
plausible = st.one_of(finite, finite, finite, number)  # mostly finite, sometimes not


@st.composite
def sane_contexts(draw: st.DrawFn) -> pb.Context:
    """Contexts the declared policies take, with values of any finite magnitude."""
    return pb.Context(
        features=draw(st.dictionaries(st.sampled_from(["x1", "x2"]), plausible, max_size=2)),
        categorical=draw(st.dictionaries(st.just("lang"), st.sampled_from(["en", "fr", "de"]),
                                         max_size=1)),
    )  # fmt: skip


@st.composite
def sane_candidates(draw: st.DrawFn, policy: str) -> list[pb.Candidate]:
    """Candidates the policy takes (so Routes get through and Feedback has decisions)."""
    ids = draw(st.lists(st.sampled_from(["a", "b", "c", "d"] if policy == "shared" else
                                         ["a", "b"] if policy == "strict" else ["a", "b", "c"]),
                        min_size=1, max_size=3, unique=True))  # fmt: skip
    k = 2 if policy == "shared" else 0
    return [pb.Candidate(id=i, features=draw(st.lists(plausible, min_size=k, max_size=k)),
                         cost=draw(plausible), expected_latency_ms=abs(draw(plausible)))
            for i in ids]  # fmt: skip


@dataclass
class Target:
    """One daemon under fuzz: its channel, how to read its stored model, what it issued."""

    name: str
    daemon: Daemon
    channel: grpc.Channel
    snapshot: Callable[[], object]
    finite: Callable[[], bool]
    issued: list[str] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    exports: list[apb.PolicyState] = field(default_factory=list)


def decision_id(draw: st.DrawFn, target: Target) -> str:
    """Mostly an id the daemon issued (a Route's), else one it did not. Every draw is made
    whatever the choice, so the data drawn never depends on what was issued before."""
    issued = target.issued
    choice, index = draw(st.integers(0, 9)), draw(st.integers(0, 10**9))
    other = draw(st.one_of(
        st.sampled_from(["", "chat", "chat:", ":x", "chat:" + "ab" * 12,
                         "chat:" + "ab" * 12 + ".b" + "6" * 8, "chat:zz.b1", "nope:" + "0" * 24,
                         "strict:" + "cd" * 12, "chat:" + "x" * 5000]),
        st.text(max_size=30),
    ))  # fmt: skip
    return issued[index % len(issued)] if issued and choice < 6 else other


@st.composite
def feedback_requests(draw: st.DrawFn, target: Target) -> pb.FeedbackRequest:
    """A reward (mostly in range, sometimes any finite or non-finite number), or metrics."""
    reward = draw(st.one_of(st.floats(0, 1), st.floats(0, 1), plausible))
    metrics = draw(st.one_of(
        st.fixed_dictionaries({"quality": st.floats(0, 1), "latency_ms": st.floats(0, 1e4)}),
        numbers,
    ))  # fmt: skip
    req = pb.FeedbackRequest(decision_id=decision_id(draw, target))
    if draw(st.integers(0, 3)):
        req.reward = reward
    else:
        req.metrics.update(metrics)
    return req


@st.composite
def arm_sums(draw: st.DrawFn) -> apb.ArmSums:
    dim = draw(st.sampled_from([1, 2, 4, 5, 12]))  # chat's dim is 5, strict's 2, shared's 6
    return apb.ArmSums(
        segment=draw(segment), arm_id=draw(arm), n=draw(st.integers(0, 2**64 - 1)),
        b=draw(st.lists(number, min_size=dim, max_size=dim)),
        s_upper=draw(st.lists(number, min_size=dim * (dim + 1) // 2,
                              max_size=dim * (dim + 1) // 2)),
        decay_epoch=draw(st.integers(-(2**63), 2**63 - 1)),
    )  # fmt: skip


@st.composite
def policy_states(draw: st.DrawFn, target: Target) -> apb.PolicyState:
    """A real export (perhaps with one value changed), or a made-up state. As in
    decision_id, every draw is made whatever the choice."""
    use_export, tamper = draw(st.booleans()), draw(st.booleans())
    i, j, k, value = (draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6)),
                      draw(st.integers(0, 10**6)), draw(number))  # fmt: skip
    made_up = apb.PolicyState(
        policy=draw(name),
        models=[apb.ModelState(segment=draw(segment), fingerprint=draw(st.text(max_size=8)),
                               version=draw(st.integers(0, 2**64 - 1)))
                for _ in range(draw(st.integers(0, 2)))],
        arms=draw(st.lists(arm_sums(), max_size=3)),
    )  # fmt: skip
    if not (target.exports and use_export):
        return made_up
    state = apb.PolicyState()
    state.CopyFrom(target.exports[i % len(target.exports)])
    if tamper and state.arms:
        victim = state.arms[j % len(state.arms)]
        if victim.b:
            victim.b[k % len(victim.b)] = value
    return state


def requests(target: Target) -> st.SearchStrategy[tuple[str, Message | bytes]]:
    """(method path, request) for every RPC of both services, and raw garbage bytes."""

    @st.composite
    def route(draw: st.DrawFn) -> tuple[str, Message]:
        sane = draw(st.integers(0, 3))  # mostly policies that exist, so the state moves
        known = draw(st.sampled_from(list(POLICIES)))
        good, bad = draw(sane_candidates(known)), draw(candidates())
        policy, cands = (known, good) if sane else (draw(name), bad)
        context = draw(sane_contexts()) if sane else draw(contexts())
        return ROUTER + "Route", pb.RouteRequest(
            policy=policy, segment=draw(segment), context=context, candidates=cands,
            replica=draw(st.sampled_from(["", "", "gpu0", "gpu1", "g" * 200])),
        )  # fmt: skip

    @st.composite
    def batch(draw: st.DrawFn) -> tuple[str, Message]:
        items = draw(st.lists(feedback_requests(target), max_size=10))
        return ROUTER + "FeedbackBatch", pb.FeedbackBatchRequest(items=items)

    @st.composite
    def residency(draw: st.DrawFn) -> tuple[str, Message]:
        adapters = [
            pb.AdapterResidency(adapter_id=draw(arm), resident=draw(st.booleans()),
                                size_bytes=draw(st.integers(0, 2**64 - 1)), load_ms=draw(number))
            for _ in range(draw(st.integers(0, 4)))
        ]  # fmt: skip
        return ROUTER + "ReportResidency", pb.ReportResidencyRequest(
            replica=draw(st.sampled_from(["gpu0", "gpu1", "", "a b"])), adapters=adapters,
            capacity_slots=draw(st.integers(0, 2**32 - 1)),
            capacity_bytes=draw(st.integers(0, 2**64 - 1)),
        )  # fmt: skip

    def admin(method: str, build: st.SearchStrategy[Message]) -> st.SearchStrategy[Any]:
        return build.map(lambda m: (ADMIN + method, m))

    policy = st.one_of(st.sampled_from(list(POLICIES)), name)
    return st.one_of(
        route(), route(), route(),
        feedback_requests(target).map(lambda m: (ROUTER + "Feedback", m)),
        feedback_requests(target).map(lambda m: (ROUTER + "Feedback", m)),
        batch(), residency(),
        st.builds(pb.GetPagingPlanRequest, replica=st.sampled_from(["gpu0", "", "x"])).map(
            lambda m: (ROUTER + "GetPagingPlan", m)),
        admin("ListPolicies", st.just(apb.ListPoliciesRequest())),
        admin("ListArms", st.builds(apb.ListArmsRequest, policy=policy)),
        admin("AddArm", st.builds(apb.ArmRequest, policy=policy, arm_id=arm)),
        admin("RemoveArm", st.builds(apb.ArmRequest, policy=policy, arm_id=arm)),
        admin("ResetPolicy", st.builds(apb.ResetPolicyRequest, policy=policy)),
        admin("ExportPolicy", st.builds(apb.ExportPolicyRequest, policy=policy)),
        admin("ImportPolicy", st.builds(apb.ImportPolicyRequest, policy=st.one_of(
            st.just(""), policy), state=policy_states(target), replace=st.booleans())),
        admin("ListSegments", st.builds(apb.ListSegmentsRequest, policy=policy,
                                        offset=st.integers(0, 2**32 - 1),
                                        limit=st.integers(0, 2**32 - 1))),
        admin("DeleteSegment", st.builds(apb.DeleteSegmentRequest, policy=policy,
                                         segment=segment)),
        st.tuples(st.sampled_from([ROUTER + m for m in ("Route", "Feedback", "FeedbackBatch",
                                                        "ReportResidency", "GetPagingPlan")]
                                  + [ADMIN + m for m in ("ImportPolicy", "AddArm")]),
                  st.binary(max_size=40)),
    )  # fmt: skip


# -- the daemons --------------------------------------------------------------------------
# Each test runs its daemon on the test's event loop and the fuzz (Hypothesis is synchronous)
# in a worker thread with a blocking channel: the loop serves while the thread waits. A daemon
# on a loop of its own thread left grpc.aio's poller thread to fail at interpreter exit.


def fuzz_settings(**overrides: Any) -> Any:
    return daemon_settings(
        policies=POLICIES,
        server={"listen": "127.0.0.1:0", "metrics_listen": "", "admin_listen": "", "grace_s": 0,
                "feedback_batch_max": 8},
        **overrides,
    )  # fmt: skip


def memory_target(daemon: Daemon, channel: grpc.Channel) -> Target:
    store = daemon.store
    assert isinstance(store, InMemoryModelStore)

    def snapshot() -> object:
        models = {
            key: {arm: b"".join(a.tobytes() for a in (s.s, s.a_inv, s.b, s.theta))
                  + s.n.to_bytes(8, "little") for arm, s in states.items()}
            for key, states in store.models().items()
        }  # fmt: skip
        router = daemon.router
        arms = tuple(router.arms(name) for name in router.policy_names)
        return models, store.pending_count, store.segment_count, arms

    def finite() -> bool:
        return all(
            np.isfinite(a).all()
            for states in store.models().values() for s in states.values()
            for a in (s.s, s.a_inv, s.b, s.theta)
        )  # fmt: skip

    return Target("memory", daemon, channel, snapshot, finite)


def redis_target(daemon: Daemon, channel: grpc.Channel, url: str) -> Target:
    client = redis.Redis.from_url(url)
    k = keys.Keys()

    def state_keys() -> list[tuple[str, str]]:
        """(key, type) of every key but the per-decision ones (pending decisions, tombstones:
        dbsize counts them): the global ones, each policy's own, and those of each slot its
        tags set names."""
        names = [(k.policies(), "set"), (k.layout(), "string")]
        pipe = client.pipeline(transaction=False)
        for policy in POLICIES:
            pipe.smembers(k.tags(policy))
        for policy, members in zip(POLICIES, pipe.execute(), strict=True):
            tags = sorted(t.decode() for t in members)
            slots = [k.legacy(policy), *(k.slot(policy, t) for t in tags)]
            names += [(k.segments(policy), "zset"), (k.arms(policy), "set"),
                      (k.tags(policy), "set")]  # fmt: skip
            for slot in slots:
                names += [(k.model(slot), "hash"), (k.sums(slot), "hash"),
                          (k.segment_arms(slot), "hash"), (k.deadlines(slot), "zset")]  # fmt: skip
        return names

    def snapshot() -> object:
        """Every model key's content, and the number of keys (pending decisions, tombstones)."""
        names = state_keys()
        pipe = client.pipeline(transaction=False)
        read = {"hash": pipe.hgetall, "zset": lambda k: pipe.zrange(k, 0, -1, withscores=True),
                "set": pipe.smembers, "string": pipe.get}  # fmt: skip
        for key, kind in names:
            read[kind](key)
        pipe.dbsize()
        return dict(zip([*(key for key, _ in names), ""], pipe.execute(), strict=True))

    def finite() -> bool:
        for key, _ in state_keys():
            if not key.endswith(":sums"):
                continue
            for blob in client.hvals(key):
                sums = codec.decode_sums(blob)
                if not (np.isfinite(sums.s).all() and np.isfinite(sums.b).all()):
                    return False
        return True

    return Target("redis", daemon, channel, snapshot, finite)


def send(channel: grpc.Channel, path: str, request: Message | bytes) -> tuple[grpc.StatusCode,
                                                                            bytes]:  # fmt: skip
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        return grpc.StatusCode.OK, call(raw, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), (exc.details() or "").encode()


def fuzz(target: Target) -> None:
    strategy = requests(target)  # built once: building it per example costs more than the RPC

    @settings(max_examples=REQUESTS, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def one(data: st.DataObject) -> None:
        path, request = data.draw(strategy)
        before = target.snapshot()
        code, body = send(target.channel, path, request)
        target.codes[f"{path.rsplit('/', 1)[1]} {code.name}"] += 1
        if os.environ.get("FUZZ_WHY") and code is not grpc.StatusCode.OK:
            target.codes[f"  {path.rsplit('/', 1)[1]}: {body[:50].decode(errors='replace')}"] += 1
        assert code in DOCUMENTED, (path, code, body[:300])
        if code is not grpc.StatusCode.OK:
            assert len(body) < 1100, (path, len(body))
            after = target.snapshot()
            assert after == before, f"{path} refused with {code.name} but changed the state"
            return
        assert target.finite(), f"{path} left a non-finite model"
        if path.endswith("/Route"):
            target.issued.append(pb.RouteResponse.FromString(body).decision_id)
        elif path.endswith("/ExportPolicy") and len(target.exports) < 20:
            target.exports.append(apb.PolicyState.FromString(body))

    one()
    still_serves(target)
    print(f"\n{target.name}: {sum(target.codes.values())} requests")
    for key, n in sorted(target.codes.items()):
        print(f"  {key:45s} {n}")


def still_serves(target: Target) -> None:
    """After the fuzz, a plain Route and Feedback work and health is SERVING."""
    health = health_pb2_grpc.HealthStub(target.channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == 1
    for arm_id in ("a", "b"):  # the fuzz may have removed them
        code, body = send(target.channel, ADMIN + "AddArm",
                          apb.ArmRequest(policy="chat", arm_id=arm_id))  # fmt: skip
        assert code is grpc.StatusCode.OK, body
    route = pb.RouteRequest(policy="chat", segment="s1", context=pb.Context(features={"x1": 1}),
                            candidates=[pb.Candidate(id="a"), pb.Candidate(id="b")])  # fmt: skip
    code, body = send(target.channel, ROUTER + "Route", route)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:  # s1 lost its place: delete one, retry
        send(target.channel, ADMIN + "ResetPolicy", apb.ResetPolicyRequest(policy="chat"))
        code, body = send(target.channel, ROUTER + "Route", route)
    assert code is grpc.StatusCode.OK, body
    decision = pb.RouteResponse.FromString(body).decision_id
    code, body = send(target.channel, ROUTER + "Feedback",
                      pb.FeedbackRequest(decision_id=decision, reward=0.5))  # fmt: skip
    assert code is grpc.StatusCode.OK, body
    assert pb.FeedbackResponse.FromString(body).status == pb.FEEDBACK_STATUS_APPLIED
    assert target.finite()


async def run(settings: Any, target: Callable[[Daemon, grpc.Channel], Target]) -> None:
    daemon = build_daemon(settings)
    await daemon.start()
    if isinstance(daemon.store, RedisModelStore):
        # The store brings the Redis to its key layout once (a write) when it first reaches
        # it: the start's ping did, so it cannot land between a refused request's before and
        # after snapshots.
        assert daemon.store.layout.ready
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            await asyncio.to_thread(fuzz, target(daemon, channel))
    finally:
        await daemon.stop(grace_s=0)


@pytest.mark.timeout(900)
async def test_fuzz_every_rpc_on_the_memory_store() -> None:
    """REQUESTS generated requests over every RPC; documented statuses only; refusals change
    nothing; models stay finite; the daemon still serves."""
    await run(fuzz_settings(), memory_target)


@pytest.mark.timeout(900)
async def test_fuzz_every_rpc_on_the_redis_store(redis_url: str) -> None:
    """The same on a real redis-server (where Export/Import and the Lua scripts run)."""
    redis.Redis.from_url(redis_url).flushdb()
    settings = fuzz_settings(
        store={"backend": "redis", "redis": {"url": redis_url, "timeout_s": 2.0}}
    )
    await run(settings, lambda daemon, channel: redis_target(daemon, channel, redis_url))
