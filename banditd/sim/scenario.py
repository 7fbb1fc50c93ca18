"""Scenario files (TOML): what to simulate, with which policies, for how long.

```toml
name = "linear"                  # used for output file names
description = "..."
horizon = 3000                   # steps per seed
seeds = 5                        # seeds 0..seeds-1
interval_s = 1.0                 # simulated seconds between requests

[env]                            # linear | nonlinear | drift | table | catalog | obd | trace
kind = "linear"
arms = 8
dim = 6

[delay]                          # none | fixed | exponential | lognormal | uniform | episode
kind = "exponential"
mean_s = 30
drop = 0.05

[policies.linucb]                # the daemon's [policies.<name>] schema (config.PolicySettings);
alpha = 1.0                      # arms and features.numeric are filled in from the environment

[baselines]                      # random | best_fixed | epsilon_greedy | cheapest | strongest
include = ["random", "best_fixed", "epsilon_greedy", "cheapest", "strongest"]
epsilon = 0.1                    # epsilon_greedy: ε₀, decay, floor

[peers.vw]                       # optional: Vowpal Wabbit and MABWiser side by side
args = "--epsilon 0.05"
[peers.mabwiser]
policy = "linucb"
alpha = 1.0

[tune]                           # `banditd tune`: grid over one policy's parameters
policy = "linucb"
grid = { alpha = [0.1, 0.5, 1.0, 2.0] }
```
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from banditd.config import PolicySettings
from banditd.policies.spec import PolicyConfig
from banditd.sim.baselines import Agent, EpsilonGreedy, FixedPreference, UniformRandom
from banditd.sim.delays import DelayModel
from banditd.sim.env import (
    DriftEnv,
    Environment,
    Episode,
    Failure,
    LinearEnv,
    NonLinearEnv,
    load_table,
)
from banditd.sim.logged import LoggedData
from banditd.sim.obd import load_obd
from banditd.sim.replay import RouterAgent
from banditd.sim.simulation import AgentFactory

BASELINES = ("random", "best_fixed", "epsilon_greedy", "cheapest", "strongest")


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    horizon: int
    seeds: int
    interval_s: float
    delay: DelayModel
    env: Environment | None
    logged: LoggedData | None
    policies: dict[str, dict[str, Any]]
    baselines: tuple[str, ...] = ()
    baseline_params: dict[str, float] = field(default_factory=dict)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune: dict[str, Any] = field(default_factory=dict)
    trace_path: Path | None = None  # env kind "trace": the trace file
    daemon_config: Path | None = None  # ... and the daemon config that logged it (replay check)
    trace_seed: int | None = None  # ... and its seed (default: the config's `seed`)

    @property
    def arms(self) -> tuple[str, ...]:
        if self.env is not None:
            return self.env.arms
        assert self.logged is not None
        return self.logged.arms or tuple(str(a) for a in range(self.logged.n_actions))

    @property
    def feature_names(self) -> tuple[str, ...]:
        if self.env is not None:
            return self.env.feature_names
        assert self.logged is not None
        return tuple(f"u{i}" for i in range(self.logged.x.shape[1]))

    def policy_config(self, name: str, overrides: Mapping[str, Any] | None = None) -> PolicyConfig:
        """The daemon's PolicyConfig for a scenario policy (validated like the daemon's)."""
        raw = dict(self.policies[name]) | dict(overrides or {})
        raw.setdefault("arms", list(self.arms))
        features = dict(raw.get("features") or {})
        features.setdefault("numeric", list(self.feature_names))
        raw["features"] = features
        return PolicySettings(**raw).to_config(name)

    def agents(
        self, policies: Mapping[str, PolicyConfig] | None = None
    ) -> list[tuple[str, AgentFactory]]:
        """(name, factory) for every policy, baseline and peer of the scenario."""
        configs = policies if policies is not None else {
            name: self.policy_config(name) for name in self.policies
        }  # fmt: skip
        out: list[tuple[str, AgentFactory]] = [
            (name, _router_factory(name, cfg)) for name, cfg in configs.items()
        ]
        out += [(b, _baseline_factory(b, self.baseline_params)) for b in self.baselines]
        out += [(p, _peer_factory(p, params)) for p, params in self.peers.items()]
        return out


def _router_factory(name: str, config: PolicyConfig) -> AgentFactory:
    def build(env: Environment, episode: Episode, seed: int) -> Agent:
        return RouterAgent(name, config, env.costs, seed)

    return build


def _baseline_factory(kind: str, params: Mapping[str, float]) -> AgentFactory:
    def build(env: Environment, episode: Episode, seed: int) -> Agent:
        rng = np.random.default_rng(seed)
        match kind:
            case "random":
                return UniformRandom(rng)
            case "best_fixed":  # in hindsight: the arm with the most expected reward
                total = np.where(episode.available, episode.mean, 0.0).sum(axis=0)
                return FixedPreference("best_fixed", total)
            case "cheapest":
                return FixedPreference("cheapest", -env.costs)
            case "strongest":
                return FixedPreference("strongest", env.strengths)
            case "epsilon_greedy":
                return EpsilonGreedy(
                    len(env.arms), rng, params.get("epsilon", 0.1), params.get("decay", 1.0),
                    params.get("floor", 0.0),
                )  # fmt: skip
        raise ValueError(f"unknown baseline {kind!r}; known: {BASELINES}")

    return build


def _peer_factory(kind: str, params: Mapping[str, Any]) -> AgentFactory:
    from banditd.sim.peers import MabwiserAgent, VowpalAgent

    def build(env: Environment, episode: Episode, seed: int) -> Agent:
        if kind == "vw":
            return VowpalAgent(len(env.arms), seed, str(params.get("args", "--epsilon 0.05")))
        if kind == "mabwiser":
            agent = MabwiserAgent(len(env.arms), seed, str(params.get("policy", "linucb")), params)
            agent.name = "mabwiser"
            return agent
        raise ValueError(f"unknown peer {kind!r}; known: vw, mabwiser")

    return build


def _env(table: Mapping[str, Any], base: Path) -> tuple[Environment | None, LoggedData | None]:
    kind = table.get("kind", "linear")
    synthetic = kind in ("linear", "nonlinear", "drift")
    arms = int(table.get("arms", 5)) if synthetic else 0  # a trace's `arms` is a list of ids
    dim = int(table.get("dim", 5))
    noise, price = float(table.get("noise", 0.1)), float(table.get("price", 0.0))
    match kind:
        case "linear":
            return LinearEnv(arms, dim, noise, price), None
        case "nonlinear":
            return NonLinearEnv(arms, dim), None
        case "drift":
            failures = tuple(Failure(**f) for f in table.get("failures", []))
            return DriftEnv(
                LinearEnv(arms, dim, noise, price), float(table.get("drift", 1.0)),
                tuple(float(c) for c in table.get("change_points", [])), failures,
            ), None  # fmt: skip
        case "table":
            return load_table(base / str(table["path"]), price, noise), None
        case "catalog":
            from banditd.sim.catalog import load_catalog

            return load_catalog(
                int(table.get("models", 16)), float(table.get("price", 0.3)),
                noise, bool(table.get("bernoulli", True)),
            ), None  # fmt: skip
        case "trace":
            from banditd.sim.logged import load_trace

            trace = base / str(table["path"])
            trace_arms = tuple(str(a) for a in table.get("arms", ()))
            return None, load_trace(trace, str(table.get("policy", "default")), trace_arms)
        case "obd":
            return None, load_obd(str(table.get("behavior", "random")),
                                  str(table.get("campaign", "all")))  # fmt: skip
    raise ValueError(f"unknown env kind {kind!r}")


def load_scenario(path: Path, seeds: int | None = None, horizon: int | None = None) -> Scenario:
    """Parse and validate a scenario file; `seeds`/`horizon` override the file's values."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    known = {"name", "description", "horizon", "seeds", "interval_s", "env", "delay", "policies",
             "baselines", "peers", "tune"}  # fmt: skip
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}")
    env_table = raw.get("env", {})
    env, logged = _env(env_table, path.parent)
    is_trace = env_table.get("kind") == "trace"
    config = env_table.get("config") if is_trace else None
    baselines = dict(raw.get("baselines", {}))
    include = tuple(baselines.pop("include", BASELINES))
    bad = sorted(set(include) - set(BASELINES))
    if bad:
        raise ValueError(f"{path}: unknown baselines {bad}; known: {BASELINES}")
    scenario = Scenario(
        path=path,
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        horizon=int(horizon or raw.get("horizon", 2000)),
        seeds=int(seeds or raw.get("seeds", 5)),
        interval_s=float(raw.get("interval_s", 1.0)),
        delay=DelayModel(**raw.get("delay", {})),
        env=env,
        logged=logged,
        policies={k: dict(v) for k, v in raw.get("policies", {}).items()},
        baselines=include,
        baseline_params={k: float(v) for k, v in baselines.items()},
        peers={k: dict(v) for k, v in raw.get("peers", {}).items()},
        tune=dict(raw.get("tune", {})),
        trace_path=path.parent / str(env_table["path"]) if is_trace else None,
        daemon_config=path.parent / str(config) if config else None,
        trace_seed=int(env_table["seed"]) if is_trace and "seed" in env_table else None,
    )
    for name in scenario.policies:
        scenario.policy_config(name)  # fail fast on a bad policy table
    return scenario
