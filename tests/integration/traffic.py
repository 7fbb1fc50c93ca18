"""Route+Feedback traffic against banditd daemons, and the exact replay it must equal.

Context features and rewards are small dyadic numbers (multiples of 1/4), so every sum
Σ x xᵀ and Σ r x is exact in float64 whatever the order: a replay in any order must match
the shared state bit for bit, and any lost or doubled update shows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc
import numpy as np

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.policies.linear import ArmState
from banditd.state import codec, keys
from banditd.state.memory_store import InMemoryModelStore
from banditd.types import ModelKey, ModelSpec, PendingDecision
from tests.integration.conftest import daemon_settings

ARMS = ("a", "b", "c")
VALUES = (-1.0, -0.5, 0.0, 0.5, 1.0)
REWARDS = (0.0, 0.25, 0.5, 1.0)


def redis_daemon_settings(url: str, **redis: object) -> object:
    return daemon_settings(
        store={"backend": "redis", "redis": {"url": url, "timeout_s": 1.0, **redis}}
    )


@dataclass(frozen=True)
class Applied:
    decision_id: str
    arm: str
    x: tuple[float, ...]
    reward: float


async def route(stub: pb_grpc.RouterStub, rnd: random.Random) -> tuple[pb.RouteResponse, tuple]:
    x1, x2 = rnd.choice(VALUES), rnd.choice(VALUES)
    req = pb.RouteRequest(
        policy="chat",
        context=pb.Context(features={"x1": x1, "x2": x2}),
        candidates=[pb.Candidate(id=a) for a in ARMS],
    )
    return await stub.Route(req, timeout=10), (1.0, x1, x2)


async def feedback(stub: pb_grpc.RouterStub, decision_id: str, reward: float) -> int | None:
    """The FeedbackStatus, or None if the store was unavailable (the caller may retry)."""
    try:
        resp = await stub.Feedback(
            pb.FeedbackRequest(decision_id=decision_id, reward=reward), timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            return None
        raise
    return int(resp.status)


def replay(applied: list[Applied], spec: ModelSpec) -> dict[str, ArmState]:
    """Single-process replay of the applied feedback through the in-memory store."""
    store = InMemoryModelStore()
    for i, a in enumerate(applied):
        store.record_now(PendingDecision(a.decision_id, "chat", "", a.arm, np.array(a.x), 1.0, 0,
                                         0.0, 1e12))  # fmt: skip
        store.settle_now(a.decision_id, a.reward, float(i), spec)
    return store.load_now(ModelKey("chat"), ARMS, spec).arms  # type: ignore[return-value]


def model_key(policy: str = "chat", segment: str = "", prefix: str = "banditd") -> str:
    """The model hash of (policy, segment): versions, fingerprints, stamps."""
    k = keys.Keys(prefix)
    return k.model(k.segment_slot(policy, segment))


async def stored_sums(client: object, prefix: str = "banditd") -> dict[str, codec.ArmSums]:
    k = keys.Keys(prefix)
    raw = await client.hgetall(k.sums(k.segment_slot("chat", "")))  # type: ignore[attr-defined]
    return {keys.split_sums_field(f.decode())[1]: codec.decode_sums(v) for f, v in raw.items()}


def assert_state_equals_replay(stored: dict[str, codec.ArmSums], applied: list[Applied],
                               spec: ModelSpec) -> None:  # fmt: skip
    want = replay(applied, spec)
    for arm in ARMS:
        w = want[arm]
        if w.n == 0:
            assert arm not in stored, arm
            continue
        got = stored[arm]
        assert got.n == w.n, (arm, got.n, w.n)
        assert got.b.tobytes() == w.b.tobytes(), arm
        assert got.s.tobytes() == w.s.tobytes(), arm
