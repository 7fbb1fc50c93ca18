"""Tuning exploration parameters (alpha, v, epsilon, decay_half_life_s, l2, price weights) by
replay over an environment or by off-policy evaluation of a log, and writing the winner as a
`[policies.<name>]` table the daemon loads.

Uncertainty: by replay, each setting's final regret is averaged over seeds (95% CI of the mean)
and the winner is compared with the runner-up on paired per-seed differences (the seeds share
contexts, rewards and delays, so the pairing removes most noise). By OPE, each setting's DR
estimate carries its bootstrap interval.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from banditd.policies import linear, linucb, thompson
from banditd.policies.spec import PolicyConfig
from banditd.sim.logged import LoggedData
from banditd.sim.metrics import mean_interval
from banditd.sim.ope import Estimate, estimate, fit_reward_model
from banditd.sim.scenario import Scenario
from banditd.sim.simulation import simulate

Array = npt.NDArray[np.float64]
TUNABLE = ("alpha", "v", "epsilon", "l2", "decay_half_life_s", "price.cost", "price.latency_ms")


def policy_distribution(config: PolicyConfig, logged: LoggedData, seed: int = 0) -> Array:
    """π_e(·|x_i) of a candidate that learns along the log: row i is scored by the daemon's
    policy code (linucb/thompson.choose) on the state built from rows < i, then the logged
    (x_i, a_i, r_i) is added. Returns (n, n_actions)."""
    k, n = logged.n_actions, logged.n
    xb = np.hstack([np.ones((n, 1)), logged.x])
    params: linucb.LinUCBParams | thompson.ThompsonParams
    if config.algorithm == "linucb":
        params = linucb.LinUCBParams(config.alpha, config.l2, config.epsilon)
    else:
        params = thompson.ThompsonParams(config.v, config.l2, config.epsilon)
    states = [linear.prior(xb.shape[1], config.l2)] * k
    penalty = np.zeros(k)
    rng = np.random.default_rng(seed)
    out = np.empty((n, k))
    for i in range(n):
        xs = [xb[i]] * k
        if isinstance(params, linucb.LinUCBParams):
            choice = linucb.choose(states, xs, penalty, params, rng)
        else:
            choice = thompson.choose(states, xs, penalty, params, rng)
        out[i] = choice.propensity
        a = int(logged.action[i])
        states[a] = linear.update(states[a], xb[i], float(logged.reward[i]))
    return out


def evaluate_logged(
    logged: LoggedData, candidates: Mapping[str, PolicyConfig], seed: int = 0,
    n_bootstrap: int = 1000,
) -> dict[str, dict[str, Estimate]]:  # fmt: skip
    """IPS/SNIPS/DM/DR (with intervals) of each candidate and of the uniform-random policy."""
    q_hat = fit_reward_model(logged.x, logged.action, logged.reward, logged.n_actions, seed=seed)
    dists = {name: policy_distribution(cfg, logged, seed) for name, cfg in candidates.items()}
    dists["random"] = np.full((logged.n, logged.n_actions), 1.0 / logged.n_actions)
    return {
        name: estimate(logged.reward, logged.action, logged.pscore, dist, q_hat,
                       n_bootstrap=n_bootstrap, seed=seed)
        for name, dist in dists.items()
    }  # fmt: skip


@dataclass(frozen=True)
class Trial:
    setting: dict[str, Any]
    score: float  # replay: mean final regret (lower is better); OPE: DR value (higher is better)
    lo: float
    hi: float
    per_seed: tuple[float, ...] = ()


@dataclass(frozen=True)
class Tuning:
    policy: str
    method: str  # "replay" | "ope"
    trials: list[Trial]  # best first
    paired: dict[str, float] = field(default_factory=dict)  # best − runner-up (replay)

    @property
    def best(self) -> Trial:
        return self.trials[0]


def settings_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    unknown = sorted(set(grid) - set(TUNABLE))
    if unknown:
        raise ValueError(f"cannot tune {unknown}; tunable: {TUNABLE}")
    keys = sorted(grid)
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def overrides(scenario: Scenario, policy: str, setting: Mapping[str, Any]) -> dict[str, Any]:
    """The policy table with a setting applied ("price.cost" sets [price] cost)."""
    table: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v)
                             for k, v in scenario.policies[policy].items()}  # fmt: skip
    for key, value in setting.items():
        section, _, leaf = key.rpartition(".")
        if section:
            table.setdefault(section, {})[leaf] = value
        else:
            table[key] = value
    return table


def tune(
    scenario: Scenario, policy: str, grid: Mapping[str, Sequence[Any]], progress: bool = False
) -> Tuning:
    """Replay every setting over the scenario's seeds (environment) or OPE it (logged data)."""
    if policy not in scenario.policies:
        raise ValueError(
            f"no policy {policy!r} in the scenario; it has {sorted(scenario.policies)}"
        )
    settings = settings_grid(grid)
    trials: list[Trial] = []
    if scenario.env is None:
        assert scenario.logged is not None
        for setting in settings:
            cfg = _config(scenario, policy, setting)
            est = evaluate_logged(scenario.logged, {policy: cfg})[policy]["dr"]
            trials.append(Trial(setting, est.value, est.lo, est.hi))
        trials.sort(key=lambda t: -t.score)
        return Tuning(policy, "ope", trials)
    seeds = range(scenario.seeds)
    for setting in settings:
        cfg = _config(scenario, policy, setting)
        agents = scenario.agents({policy: cfg})[:1]
        result = simulate(scenario.env, agents, scenario.horizon, seeds, scenario.delay,
                          scenario.interval_s, progress=progress)  # fmt: skip
        final = result.regret(policy)[:, -1]
        mean, lo, hi = mean_interval(final)
        trials.append(Trial(setting, mean, lo, hi, tuple(float(v) for v in final)))
    trials.sort(key=lambda t: t.score)
    paired: dict[str, float] = {}
    if len(trials) > 1 and len(trials[0].per_seed) > 1:
        diff = np.subtract(trials[0].per_seed, trials[1].per_seed)
        mean, lo, hi = mean_interval(diff)
        paired = {"mean": mean, "lo": lo, "hi": hi}
    return Tuning(policy, "replay", trials, paired)


def _config(scenario: Scenario, policy: str, setting: Mapping[str, Any]) -> PolicyConfig:
    return scenario.policy_config(policy, overrides(scenario, policy, setting))


def config_snippet(scenario: Scenario, tuning: Tuning) -> str:
    """A `[policies.<name>]` TOML table (the simulated policy with the winning setting)."""
    best = tuning.best
    table = overrides(scenario, tuning.policy, best.setting)
    table.setdefault("arms", list(scenario.arms))
    features = dict(table.get("features") or {})
    features.setdefault("numeric", list(scenario.feature_names))
    table["features"] = features
    what = "mean final regret" if tuning.method == "replay" else "DR policy value"
    if tuning.method == "replay":
        how = f"replay, {scenario.seeds} seeds x {scenario.horizon} steps"
    else:
        how = f"off-policy evaluation (DR) on {scenario.logged.name if scenario.logged else ''}"
    lines = [
        f"# banditd tune {scenario.path.name}: {how}",
        f"# best {best.setting}: {what} {best.score:.4g} (95% CI {best.lo:.4g} .. {best.hi:.4g})",
    ]
    if len(tuning.trials) > 1:
        r = tuning.trials[1]
        lines.append(f"# runner-up {r.setting}: {r.score:.4g} (95% CI {r.lo:.4g} .. {r.hi:.4g})")
    if tuning.paired:
        p = tuning.paired
        lines.append(f"# best - runner-up, paired over seeds: {p['mean']:.4g}"
                     f" (95% CI {p['lo']:.4g} .. {p['hi']:.4g})")  # fmt: skip
    lines += _toml_table(f"policies.{tuning.policy}", table)
    return "\n".join(lines) + "\n"


def _toml_table(name: str, table: Mapping[str, Any]) -> list[str]:
    plain = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    nested = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    lines = [f"[{name}]", *(f"{_key(k)} = {_value(v)}" for k, v in plain)]
    for key, sub in nested:
        lines += _toml_table(f"{name}.{_key(key)}", sub)
    return lines


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
