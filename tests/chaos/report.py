"""What the chaos run ends with: the stored model, read back from Redis, against the ledger of
answers (load.py), the checks the issue asks for, and the printed table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from banditd.feedback import ids
from banditd.state import codec, keys
from banditd.types import ModelSpec
from tests.chaos.load import APPLIED, DUPLICATE, RETRYABLE, Decision, Load
from tests.integration.traffic import ARMS, Applied, replay, stored_sums

SPEC = ModelSpec(dim=3)  # x = (1, x1, x2); l2 and decay as the config's defaults
MIN_AVAILABILITY = 0.99  # Routes answered OK / Routes sent while Redis is down or paused
REDIS_FAULTS = ("redis killed", "redis paused")


@dataclass
class Stored:
    """What Redis holds at the end."""

    sums: dict[str, codec.ArmSums]
    version: int  # the model version of segment "": one per applied update
    tombs: dict[str, dict[bytes, bytes]]  # decision id -> its tombstone (empty: none)
    pending: set[str]  # decision ids still pending


async def read_store(url: str, decisions: list[Decision]) -> Stored:
    k = keys.Keys()
    client = aioredis.from_url(url, socket_timeout=30)
    try:
        sums = await stored_sums(client)
        slot = k.segment_slot("chat", "")
        version = int(await client.hget(k.model(slot), keys.version_field("")) or 0)
        tombs: dict[str, dict[bytes, bytes]] = {}
        for start in range(0, len(decisions), 1000):
            chunk = [d.decision_id for d in decisions[start : start + 1000]]
            pipe = client.pipeline(transaction=False)
            for decision_id in chunk:
                pipe.hgetall(k.tombstone(decision_id))
            tombs.update(zip(chunk, await pipe.execute(), strict=True))
        pending = {
            key.decode().rsplit(":pending:", 1)[1]
            for pattern in k.pending_patterns("chat")
            async for key in client.scan_iter(match=pattern, count=1000)
        }
    finally:
        await client.aclose()
    return Stored(sums, version, tombs, pending)


@dataclass
class Tally:
    """The ledger against the store, decision by decision."""

    acknowledged: list[Decision] = field(default_factory=list)  # APPLIED or DUPLICATE answered
    dup_only: int = 0  # acknowledged by DUPLICATE only (the APPLIED answer was lost)
    lost: list[str] = field(default_factory=list)  # acknowledged, not in the model as sent
    doubled: list[str] = field(default_factory=list)  # APPLIED answered more than once
    refused: list[str] = field(default_factory=list)  # a final non-OK answer, or gave up
    mismatched: list[str] = field(default_factory=list)  # OK answer with another arm/reward
    unacked_in_model: list[str] = field(default_factory=list)  # applied, never acknowledged
    buffered: int = 0  # decisions routed while Redis was unreachable (buffered ids)
    recorded_twice: list[str] = field(default_factory=list)  # pending under a plain id too
    unanswered: int = 0  # pending decisions no Route answer named (replica killed mid-Route)
    version_collisions: int = 0  # APPLIED answers that share a model version
    replay_mismatches: list[str] = field(default_factory=list)


def tally(decisions: list[Decision], stored: Stored) -> tuple[Tally, int]:
    """(tally, n in the model)."""
    t = Tally()
    versions: Counter[int] = Counter()
    ledger = {d.decision_id for d in decisions}
    for d in decisions:
        tomb = stored.tombs.get(d.decision_id, {})
        in_model = tomb.get(b"outcome") == b"applied"
        versions.update(d.applied_versions)
        t.buffered += ids.buffered_at(d.decision_id) is not None
        if d.acknowledged:
            t.acknowledged.append(d)
            t.dup_only += d.applied == 0
            reward = tomb.get(b"reward")
            if not in_model or reward is None or codec.decode_f64(reward) != d.reward:
                t.lost.append(f"{d.decision_id} tomb={tomb!r} answers={d.answers}")
        elif in_model:
            t.unacked_in_model.append(f"{d.decision_id} answers={d.answers}")
        if d.applied > 1:
            t.doubled.append(f"{d.decision_id} answers={d.answers}")
        if d.finals or not d.acknowledged:
            finals = d.finals or ["no final answer"]
            t.refused.append(f"{d.decision_id} routed by {d.replica} in {d.phase}: {finals}")
        if d.mismatches:
            t.mismatched.append(f"{d.decision_id} arm={d.arm} reward={d.reward} {d.mismatches}")
    t.version_collisions = sum(n - 1 for n in versions.values() if n > 1)
    plain = {i.rsplit(ids.BUFFERED, 1)[0]: i for i in ledger if ids.buffered_at(i) is not None}
    for decision_id in stored.pending - ledger:
        if decision_id in plain:  # a record that timed out landed, and was buffered as well
            t.recorded_twice.append(f"{decision_id} (answered as {plain[decision_id]})")
        else:
            t.unanswered += 1
    applied = [Applied(d.decision_id, d.arm, d.x, d.reward) for d in t.acknowledged]
    want = replay(applied, SPEC)
    for arm in ARMS:
        w, got = want[arm], stored.sums.get(arm)
        if got is None:
            if w.n:
                t.replay_mismatches.append(f"arm {arm}: nothing stored, replay n={w.n}")
            continue
        if got.n != w.n or got.b.tobytes() != w.b.tobytes() or got.s.tobytes() != w.s.tobytes():
            t.replay_mismatches.append(
                f"arm {arm}: stored n={got.n} b={got.b.tolist()}, replay n={w.n} b={w.b.tolist()}"
            )
    return t, sum(s.n for s in stored.sums.values())


@dataclass
class Report:
    target: int
    load: Load
    stored: Stored
    wall_s: float
    liveness: dict[str, Counter[str]]
    not_serving: list[str]
    learning_down: dict[str, bool]  # replica -> banditd.v1.Learning NOT_SERVING in the outage
    metrics: dict[str, dict[str, float]]  # replica -> its /metrics at the end
    exit_codes: dict[str, int | None]  # replica -> exit code after SIGTERM
    durations: dict[str, float]  # fault phase -> seconds
    tally: Tally = field(init=False)
    model_n: int = field(init=False)

    def __post_init__(self) -> None:
        self.tally, self.model_n = tally(self.load.decisions, self.stored)

    def availability(self, phase: str) -> tuple[int, int]:
        """(Route RPCs answered OK, sent) in `phase`, both replicas."""
        stats = self.load.routes.get(phase, {}).values()
        return sum(s.ok for s in stats), sum(s.sent for s in stats)

    def failures(self) -> list[str]:
        """Every check that failed, as a sentence (empty: the run passed)."""
        t, out = self.tally, []
        decisions = len(self.load.decisions)
        if decisions < self.target:
            out.append(f"only {decisions} of {self.target} decisions were routed")
        if self.model_n != len(t.acknowledged):
            out.append(f"model n {self.model_n} != {len(t.acknowledged)} rewards acknowledged")
        if self.stored.version != self.model_n:
            out.append(f"model version {self.stored.version} != n {self.model_n}")
        for name, items in (
            ("sums differ from the replay", t.replay_mismatches), ("lost", t.lost),
            ("doubled", t.doubled), ("refused with a final status", t.refused),
            ("answered with another arm or reward", t.mismatched),
            ("applied but never acknowledged", t.unacked_in_model),
            ("recorded twice (will get the default reward at expiry)", t.recorded_twice),
            ("Routes never answered", self.load.route_refused),
            ("errors in the load generator", self.load.errors),
            ("liveness/readiness not SERVING", self.not_serving),
        ):  # fmt: skip
            if items:
                out.append(f"{len(items)} {name}: {items[:5]}")
        if t.version_collisions:
            out.append(f"{t.version_collisions} APPLIED answers share a model version")
        for phase in REDIS_FAULTS:
            ok, sent = self.availability(phase)
            if not sent or ok / sent < MIN_AVAILABILITY:
                out.append(f"Route availability {ok}/{sent} while {phase}")
        for name, down in self.learning_down.items():
            if not down:
                out.append(f"{name}: banditd.v1.Learning never went NOT_SERVING in the outage")
        for name, m in self.metrics.items():
            if m.get("banditd_outage_buffered", 0) or m.get("banditd_store_up") != 1:
                out.append(f"{name} did not recover: {m}")
            if m.get("banditd_decisions_unrecorded_total", 0):
                out.append(f"{name} left decisions unrecorded")
        if any(code != 0 for code in self.exit_codes.values()):
            out.append(f"exit codes after SIGTERM: {self.exit_codes}")
        return out

    def table(self) -> str:
        t, load = self.tally, self.load
        answers: Counter[str] = Counter()
        for counts in load.feedback.values():
            answers.update(counts)
        retried = sum(answers[c.name] for c in RETRYABLE)
        lines = [
            f"chaos: 2 replicas on one redis-server (AOF, appendfsync always),"
            f" {len(load.decisions):,} decisions, {self.wall_s:.1f} s wall",
            "",
            f"{'phase':<27}{'s':>6}{'Routes sent':>13}{'OK':>8}{'degraded':>10}{'avail':>9}"
            f"   failed Routes / feedback answers",
        ]
        for phase, per_replica in load.routes.items():
            stats = per_replica.values()
            ok, sent = self.availability(phase)
            failed: Counter[str] = Counter()
            for s in stats:
                failed.update(s.failed)
            seconds = self.durations.get(phase)
            lines.append(
                f"{phase:<27}{'' if seconds is None else f'{seconds:.1f}':>6}{sent:>13,}{ok:>8,}"
                f"{sum(s.degraded for s in stats):>10,}{ok / max(sent, 1):>9.4f}"
                f"   {dict(failed) or '-'} / {dict(load.feedback.get(phase, {}))}"
            )
        live: Counter[str] = Counter()
        for counts in self.liveness.values():
            live.update(counts)
        unanswered = f"{t.unanswered} (Routes cut off when the replica was killed)"
        extra = max(self.model_n - len(t.acknowledged), 0)  # updates no answer accounts for
        doubled = f"{extra} (decisions answered APPLIED twice: {len(t.doubled)})"
        lines += [
            "(avail: Route RPCs answered OK / sent; a Route a dead replica refused is sent again"
            " to the other one)",
            "",
            f"feedback answers: {APPLIED} {answers[APPLIED]:,}, {DUPLICATE}"
            f" {answers[DUPLICATE]:,} (rewards sent again {load.repeats:,}, to both replicas at"
            f" once {load.pairs:,}), retried {retried:,}",
            f"rewards acknowledged {len(t.acknowledged):,} (APPLIED"
            f" {len(t.acknowledged) - t.dup_only:,}, DUPLICATE only {t.dup_only:,});"
            f" in the model n = {self.model_n:,}, version {self.stored.version:,};"
            f" sums = replay bit for bit: {'yes' if not t.replay_mismatches else 'NO'}",
            f"lost {len(t.lost)}, doubled {doubled},"
            f" refused with a final status {len(t.refused)}, Routes never answered"
            f" {len(load.route_refused)}",
            f"liveness NOT_SERVING {sum(1 for e in self.not_serving if 'liveness' in e)};"
            f" health checks {dict(live)}",
            f"decisions routed while Redis was unreachable (buffered ids) {t.buffered:,};"
            f" pending at the end: recorded twice {len(t.recorded_twice)}, unanswered {unanswered}",
            f"learning path NOT_SERVING in the outage: {self.learning_down};"
            f" exit codes after SIGTERM: {self.exit_codes}",
        ]
        return "\n".join(lines)
