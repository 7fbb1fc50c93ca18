"""Run agents over an environment's episodes, one seed at a time, with delayed rewards.

Common random numbers: for a given seed every agent sees the same contexts, the same rewards
and the same delays, so differences between agents are differences between policies.
"""

from __future__ import annotations

import heapq
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from banditd.sim.baselines import Agent
from banditd.sim.delays import DelayModel
from banditd.sim.env import Environment, Episode

Array = npt.NDArray[np.float64]
T0 = 1_700_000_000.0  # simulated wall clock starts here (decay epochs are Unix-time based)


@dataclass(frozen=True, slots=True)
class Run:
    """One agent on one seed: per-step expected reward of the chosen arm, reward received."""

    agent: str
    seed: int
    chosen_mean: Array
    reward: Array
    arms: npt.NDArray[np.int64]
    seconds: float
    late: int = 0


@dataclass
class Result:
    """Every run of a scenario, grouped by agent; best (T,) per seed for regret."""

    horizon: int
    best: dict[int, Array] = field(default_factory=dict)
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def regret(self, agent: str) -> Array:
        """(S, T) cumulative pseudo-regret curves of one agent."""
        return np.stack([np.cumsum(self.best[r.seed] - r.chosen_mean) for r in self.runs[agent]])

    def reward(self, agent: str) -> Array:
        """(S, T) cumulative reward curves (rewards actually paid, noise included)."""
        return np.stack([np.cumsum(r.reward) for r in self.runs[agent]])

    def oracle_reward(self) -> Array:
        return np.stack([np.cumsum(b) for _, b in sorted(self.best.items())])


def run_episode(
    agent: Agent, episode: Episode, delays: Array, interval_s: float, seed: int = 0
) -> Run:
    """Step through an episode; each reward reaches the agent `delays[t]` seconds later."""
    horizon = episode.horizon
    chosen_mean = np.empty(horizon)
    paid = np.empty(horizon)
    arms = np.empty(horizon, dtype=np.int64)
    pending: list[tuple[float, int, object, float]] = []
    x, mean, reward, available = episode.x, episode.mean, episode.reward, episode.available
    started = time.perf_counter()
    for t in range(horizon):
        now = T0 + t * interval_s
        while pending and pending[0][0] <= now:
            due, _, ticket, r = heapq.heappop(pending)
            agent.learn(ticket, r, due)
        agent.tick(now)
        arm, ticket = agent.decide(now, x[t], available[t])
        arms[t] = arm
        chosen_mean[t] = mean[t, arm]
        paid[t] = reward[t, arm]
        if math.isfinite(delays[t]):
            heapq.heappush(pending, (now + float(delays[t]), t, ticket, float(paid[t])))
    seconds = time.perf_counter() - started
    late = int(getattr(agent, "late", 0))
    return Run(agent.name, seed, chosen_mean, paid, arms, seconds, late)


AgentFactory = Callable[[Environment, Episode, int], Agent]


def agent_seed(seed: int, name: str) -> int:
    """An agent's own rng seed: a function of the run seed and the agent's name only, so
    adding or removing other agents (or tuning one alone) leaves its draws unchanged."""
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)
    return int(state[0])


def simulate(
    env: Environment,
    agents: Sequence[tuple[str, AgentFactory]],
    horizon: int,
    seeds: Sequence[int],
    delay: DelayModel,
    interval_s: float = 1.0,
    progress: bool = False,
) -> Result:
    """Every agent on every seed. A factory gets (env, episode, agent seed) and builds a fresh
    agent, so hindsight baselines (best fixed arm) can look at the episode."""
    result = Result(horizon)
    bar = _bar(len(seeds) * len(agents), progress)
    for seed in seeds:
        episode = env.episode(horizon, np.random.default_rng([seed, 0]))
        delays = delay.sample(horizon, np.random.default_rng([seed, 1]), interval_s)
        result.best[seed] = episode.best_mean()
        for name, factory in agents:
            agent = factory(env, episode, agent_seed(seed, name))
            run = run_episode(agent, episode, delays, interval_s, seed)
            result.runs.setdefault(name, []).append(
                Run(name, seed, run.chosen_mean, run.reward, run.arms, run.seconds, run.late)
            )
            if bar is not None:
                bar.set_postfix_str(f"{name} seed {seed}")
                bar.update(1)
    if bar is not None:
        bar.close()
    return result


class _Bar:
    def set_postfix_str(self, text: str) -> None: ...
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def _bar(total: int, enabled: bool) -> _Bar | None:
    if not enabled:
        return None
    from tqdm import tqdm

    bar: _Bar = tqdm(total=total, unit="run", desc="simulating")
    return bar
