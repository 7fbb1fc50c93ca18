"""Drive the daemon's own Router offline: over a synthetic environment, or over a trace the
daemon logged (reproducing its decisions).

The Router is async because the daemon's stores do I/O. The in-memory store and the numeric
extractor never suspend, so `drive` runs a Router coroutine to completion with one `send`,
without an event loop: the simulator executes exactly the code the daemon executes (no
re-implementation of the policy), at a fraction of asyncio's per-call overhead. If a coroutine
ever suspends (a store that really awaits), `drive` refuses rather than guess.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from banditd.errors import DecisionExpiredError, DecisionNotFoundError
from banditd.features.schema import NumericExtractor
from banditd.policies.spec import PolicyConfig
from banditd.router import Router
from banditd.sim.traces import RedactedTraceError, read_trace
from banditd.state.memory_store import InMemoryModelStore
from banditd.types import Candidate, Context, FeatureExtractor

T = TypeVar("T")
Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion, synchronously."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("coroutine suspended: drive() only runs non-blocking (in-memory) ports")


class SimClock:
    """The Clock port, moved by the simulator."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def numeric_extractor(config: PolicyConfig) -> FeatureExtractor:
    """The daemon's default pipeline (server/app.py builds the same one)."""
    return NumericExtractor(
        config.numeric, config.allow_unknown_features, config.max_abs_z, config.clip_out_of_range
    )


def sequential_ids() -> Callable[[str, str], str]:
    """Deterministic decision ids '<policy>:<24 hex>' (the daemon's are random)."""
    counter = itertools.count()
    return lambda policy, _segment: f"{policy}:{next(counter):024x}"


class RouterAgent:
    """A simulator agent backed by a real Router + InMemoryModelStore + SimClock."""

    def __init__(
        self,
        name: str,
        config: PolicyConfig,
        costs: Array,
        seed: int,
        sweep_interval_s: float = 1.0,
    ) -> None:
        self.name = name
        self.clock = SimClock()
        self.store = InMemoryModelStore()
        self.router = Router(
            {config.name: config}, numeric_extractor, self.store, self.clock,
            np.random.default_rng(seed), new_id=sequential_ids(),
        )  # fmt: skip
        self._policy = config.name
        self._names = tuple(f.name for f in config.numeric)
        self._candidates = [
            Candidate(arm, (), float(c)) for arm, c in zip(config.arms, costs, strict=True)
        ]
        self._index = {arm: i for i, arm in enumerate(config.arms)}
        self._sweep_interval_s = sweep_interval_s
        self._last_sweep = -np.inf
        self.late = 0  # rewards that came after reward_wait_s (settled by expiry instead)

    def decide(self, now: float, x: Array, available: Mask) -> tuple[int, object]:
        self.clock.t = now
        context = Context(features=dict(zip(self._names, x.tolist(), strict=True)))
        if available.all():
            candidates = self._candidates
        else:
            candidates = [c for c, ok in zip(self._candidates, available, strict=True) if ok]
        result = drive(self.router.route(self._policy, "", context, candidates))
        return self._index[result.arm], result.decision_id

    def learn(self, ticket: object, reward: float, now: float) -> None:
        self.clock.t = now
        try:
            drive(self.router.feedback(str(ticket), reward, {}))
        except DecisionExpiredError:
            self.late += 1

    def tick(self, now: float) -> None:
        if now - self._last_sweep >= self._sweep_interval_s:
            self.clock.t = now
            self._last_sweep = now
            drive(self.router.expire())


# -- replaying a daemon trace ------------------------------------------------------------------
@dataclass
class TraceReplay:
    """How a replay of a logged trace compared with the daemon's own decisions."""

    decisions: int = 0
    same_arm: int = 0
    max_propensity_error: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    mismatches: list[tuple[str, str, str]] = field(default_factory=list)  # (id, logged, replayed)

    @property
    def reproduced(self) -> bool:
        return self.decisions > 0 and self.same_arm == self.decisions


def replay_trace(
    path: Path,
    policies: Mapping[str, PolicyConfig],
    seed: int | None,
    extractor_for: Callable[[PolicyConfig], FeatureExtractor] = numeric_extractor,
    max_mismatches: int = 20,
    template: PolicyConfig | None = None,
) -> TraceReplay:
    """Re-run a daemon trace through a fresh Router built from the same policy configs.

    Decisions are re-made at their logged times with the logged contexts and candidates, and
    rewards are applied when the trace says they were (expiry sweeps included). With the
    daemon's seed, every decision must come out the same: a mismatch means the state or the
    configuration differs from the daemon's (or the trace is incomplete). Pass the daemon's
    `template` if it auto-created policies, and its `extractor_for` if it did not use the
    numeric pipeline. A trace written with trace_context = "hash" or "drop" is a RedactedTraceError.
    """
    clock = SimClock()
    current: list[str] = [""]
    router = Router(
        policies, extractor_for, InMemoryModelStore(), clock, np.random.default_rng(seed),
        template=template, new_id=lambda _policy, _segment: current[0],
    )  # fmt: skip
    report = TraceReplay()
    for record in read_trace(path):
        clock.t = float(record["t"])  # type: ignore[arg-type]
        decision_id = str(record["decision_id"])
        if record["type"] == "decision":
            if "redacted" in record:
                raise RedactedTraceError(
                    f"{path}: decision {decision_id} was traced with trace_context ="
                    f" {record['redacted']!r}: its context is not in the trace, so it cannot be"
                    " replayed (OPE on a 'hash' trace still works)"
                )
            current[0] = decision_id
            result = drive(
                router.route(str(record["policy"]), str(record["segment"]),
                             _context(record), _candidates(record))
            )  # fmt: skip
            report.decisions += 1
            logged = str(record["arm"])
            if result.arm == logged:
                report.same_arm += 1
            elif len(report.mismatches) < max_mismatches:
                report.mismatches.append((decision_id, logged, result.arm))
            err = abs(result.propensity - float(record["propensity"]))  # type: ignore[arg-type]
            report.max_propensity_error = max(report.max_propensity_error, err)
            continue
        outcome = str(record["outcome"])
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        reported = record.get("reported")
        if outcome in ("defaulted", "dropped"):
            drive(router.expire())
        elif reported is not None:
            # A late or unknown feedback fails here as it did in the daemon (the trace has it).
            with contextlib.suppress(DecisionExpiredError, DecisionNotFoundError):
                drive(router.feedback(decision_id, float(reported), {}))  # type: ignore[arg-type]
    return report


def _context(record: Mapping[str, Any]) -> Context:
    ctx = record.get("context") or {}
    return Context(
        features={k: float(v) for k, v in (ctx.get("features") or {}).items()},
        categorical=dict(ctx.get("categorical") or {}),
    )


def _candidates(record: Mapping[str, Any]) -> Sequence[Candidate]:
    return [
        Candidate(str(c["id"]), tuple(c.get("features") or ()), float(c.get("cost", 0.0)),
                  float(c.get("expected_latency_ms", 0.0)))
        for c in record["candidates"]
    ]  # fmt: skip
