"""Route+Feedback load on the replicas, and the ledger of every answer it received.

A bounded number of Routes stay in flight, each to a random replica (on failure the next try
goes to the other one). Every routed decision gets one reward (a multiple of 1/4, so the replay
is exact bit for bit) sent to a random replica; some rewards are sent again after the answer
(it must be DUPLICATE) or to both replicas at once. UNAVAILABLE and DEADLINE_EXCEEDED (a dead
replica, Redis down, a buffered decision not flushed yet) are retried with backoff, on a random
replica, until a final answer or GIVE_UP_S.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import grpc

from banditd.api.v1 import bandit_pb2 as pb
from tests.chaos.cluster import Replica
from tests.integration.traffic import ARMS, REWARDS, VALUES

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
RPC_TIMEOUT_S = 15.0
MAX_BACKOFF_S = 1.0
GIVE_UP_S = 120.0  # a call still retryable after this counts as refused (never expected)
APPLIED, DUPLICATE = "APPLIED", "DUPLICATE"  # FeedbackStatus names without the prefix
CANDIDATES = [pb.Candidate(id=a) for a in ARMS]


@dataclass(slots=True)
class Decision:
    """One routed decision, its reward and every answer its Feedback calls received."""

    decision_id: str
    replica: str  # the replica that routed it
    arm: str
    x: tuple[float, ...]
    reward: float
    phase: str
    answers: list[str] = field(default_factory=list)  # "r1 UNAVAILABLE", "r0 APPLIED", ...
    applied_versions: list[int] = field(default_factory=list)  # model_version of each APPLIED
    finals: list[str] = field(default_factory=list)  # final non-OK answers, "gave up"
    mismatches: list[str] = field(default_factory=list)  # OK answers naming another arm/reward

    @property
    def applied(self) -> int:
        return len(self.applied_versions)

    @property
    def acknowledged(self) -> bool:
        """The daemon said its reward is in the model (APPLIED, or DUPLICATE: applied by an
        attempt whose answer was lost)."""
        return self.applied > 0 or any(a.endswith(DUPLICATE) for a in self.answers)


@dataclass(slots=True)
class RouteStats:
    """Route RPCs sent to one replica in one phase."""

    sent: int = 0
    ok: int = 0
    degraded: int = 0
    failed: Counter[str] = field(default_factory=Counter)


class Load:
    """Routes until `target` decisions were routed and `release()` was called (the faults are
    over); Feedback tasks run on to their final answer."""

    def __init__(
        self, replicas: list[Replica], target: int, seed: int = 0, routes_in_flight: int = 16,
        feedback_in_flight: int = 32, repeat_p: float = 0.1, pair_p: float = 0.05,
    ) -> None:  # fmt: skip
        self.replicas = replicas
        self.target = target
        self.phase = "warmup"
        self.phases: dict[str, tuple[float, float]] = {}  # phase -> (start, end) loop time
        self.decisions: list[Decision] = []
        self.routes: dict[str, dict[str, RouteStats]] = defaultdict(
            lambda: {r.name: RouteStats() for r in replicas}
        )
        self.feedback: dict[str, Counter[str]] = defaultdict(Counter)  # phase -> answers
        self.route_refused: list[str] = []  # Routes that never got an answer (final codes)
        self.errors: list[str] = []  # exceptions in the load itself (a bug in this harness)
        self.repeats = 0  # rewards sent again after their answer
        self.pairs = 0  # rewards sent to both replicas at once
        self._seed = seed
        self._workers = routes_in_flight
        self._slots = asyncio.Semaphore(feedback_in_flight)
        self._repeat_p, self._pair_p = repeat_p, pair_p
        self._tasks: set[asyncio.Task[None]] = set()
        self._released = self._stopped = False

    # -- routes --------------------------------------------------------------------------------
    async def run(self) -> None:
        self.enter(self.phase)
        try:
            await asyncio.gather(
                *(self._worker(self._seed * 1000 + i) for i in range(self._workers))
            )
        finally:
            self._stopped = True

    def enter(self, phase: str) -> None:
        """Count what follows under `phase` (a Route or Feedback answer counts in the phase in
        which it arrived)."""
        now = asyncio.get_running_loop().time()
        self._close(now)
        self.phase = phase
        self.phases[phase] = (now, now)

    def durations(self) -> dict[str, float]:
        """Seconds spent in each phase (the last one: until now)."""
        self._close(asyncio.get_running_loop().time())
        return {phase: end - start for phase, (start, end) in self.phases.items()}

    def _close(self, now: float) -> None:
        start, _ = self.phases.get(self.phase, (now, now))
        self.phases[self.phase] = (start, now)

    def release(self) -> None:
        """Let the workers stop once `target` decisions were routed."""
        self._released = True

    async def reached(self, count: int, timeout_s: float) -> None:
        """Wait until `count` decisions were routed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.decisions) < count:
            if self._stopped:
                raise RuntimeError(f"the load stopped at {len(self.decisions)} decisions")
            if loop.time() > deadline:
                raise TimeoutError(f"{len(self.decisions)} of {count} decisions in {timeout_s} s")
            await asyncio.sleep(0.05)

    async def _worker(self, seed: int) -> None:
        rnd = random.Random(seed)
        while not self._released or len(self.decisions) < self.target:
            decision = await self._route(rnd)
            if decision is None:
                continue
            self.decisions.append(decision)
            task = asyncio.create_task(self._reward(decision, random.Random(rnd.random())))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.errors.append(repr(exc))

    async def _route(self, rnd: random.Random) -> Decision | None:
        x1, x2 = rnd.choice(VALUES), rnd.choice(VALUES)
        request = pb.RouteRequest(
            policy="chat", context=pb.Context(features={"x1": x1, "x2": x2}),
            candidates=CANDIDATES,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        give_up = loop.time() + GIVE_UP_S
        first, delay, attempt = rnd.randrange(len(self.replicas)), 0.02, 0
        started_in = self.phase
        while True:
            replica = self.replicas[(first + attempt) % len(self.replicas)]
            try:
                resp = await replica.stub.Route(request, timeout=RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                stats = self.routes[self.phase][replica.name]
                stats.sent += 1
                stats.failed[exc.code().name] += 1
                if exc.code() not in RETRYABLE or loop.time() > give_up:
                    self.route_refused.append(f"{replica.name} {exc.code().name}: {exc.details()}")
                    return None
                attempt += 1
                await asyncio.sleep(delay * (0.5 + rnd.random()))
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            stats = self.routes[self.phase][replica.name]
            stats.sent += 1
            stats.ok += 1
            stats.degraded += resp.degraded
            return Decision(
                resp.decision_id, replica.name, resp.arm_id, (1.0, x1, x2), rnd.choice(REWARDS),
                started_in,
            )  # fmt: skip

    # -- rewards -------------------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> None:
        """Wait for every Feedback task to reach its final answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{len(self._tasks)} feedback tasks still running")
            await asyncio.wait(set(self._tasks), timeout=left)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _reward(self, d: Decision, rnd: random.Random) -> None:
        draw, n = rnd.random(), len(self.replicas)
        if draw < self._pair_p:  # the same reward to both replicas at once
            self.pairs += 1
            await asyncio.gather(*(self._settle(d, rnd, i) for i in range(n)))
            return
        await self._settle(d, rnd, rnd.randrange(n))
        if draw < self._pair_p + self._repeat_p:  # again, after the answer: DUPLICATE
            self.repeats += 1
            await self._settle(d, rnd, rnd.randrange(n))

    async def _settle(self, d: Decision, rnd: random.Random, first: int) -> None:
        """One Feedback, retried while the answer is retryable."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + GIVE_UP_S
        request = pb.FeedbackRequest(decision_id=d.decision_id, reward=d.reward)
        replica, delay = self.replicas[first], 0.02
        while True:
            async with self._slots:
                try:
                    resp = await replica.stub.Feedback(request, timeout=RPC_TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    resp, code, details = None, exc.code(), exc.details()
            if resp is not None:
                answer = pb.FeedbackStatus.Name(resp.status).removeprefix("FEEDBACK_STATUS_")
                self.feedback[self.phase][answer] += 1
                d.answers.append(f"{replica.name} {answer}")
                if resp.status == pb.FEEDBACK_STATUS_APPLIED:
                    d.applied_versions.append(resp.model_version)
                if resp.arm_id != d.arm or resp.reward != d.reward:
                    d.mismatches.append(f"{replica.name} {answer} {resp.arm_id} {resp.reward}")
                return
            self.feedback[self.phase][code.name] += 1
            d.answers.append(f"{replica.name} {code.name}")
            if code not in RETRYABLE:
                d.finals.append(f"{replica.name} {code.name}: {details}")
                return
            if loop.time() > give_up:
                d.finals.append(f"gave up after {GIVE_UP_S} s: {details}")
                return
            await asyncio.sleep(delay * (0.5 + rnd.random()))
            delay = min(2 * delay, MAX_BACKOFF_S)
            replica = self.replicas[rnd.randrange(len(self.replicas))]
