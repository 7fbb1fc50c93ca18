"""Simulation outputs: a PNG of regret/reward curves with confidence bands, a JSON summary and
a CSV of the curves (mean and band at up to 200 checkpoints). Matplotlib runs headless (Agg)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from banditd.sim.metrics import band, loglog_slope, mean_interval
from banditd.sim.ope import Estimate
from banditd.sim.scenario import Scenario
from banditd.sim.simulation import Result
from banditd.sim.traces import RedactedTraceError

ORACLE = "oracle"


def summarize(result: Result, level: float = 0.95) -> dict[str, Any]:
    """Per agent: final cumulative regret and reward (mean, CI over seeds), log-log slope of the
    mean regret curve over the last 90% of steps, decision+update cost per step."""
    agents: dict[str, Any] = {}
    for name, runs in result.runs.items():
        regret = result.regret(name)
        reward = result.reward(name)
        steps = sum(r.chosen_mean.shape[0] for r in runs)
        agents[name] = {
            "regret": _ci(regret[:, -1], level),
            "reward": _ci(reward[:, -1], level),
            "mean_reward_per_step": float(reward[:, -1].mean() / result.horizon),
            "regret_loglog_slope": loglog_slope(regret.mean(axis=0), 0.1),
            "us_per_step": 1e6 * sum(r.seconds for r in runs) / max(steps, 1),
            "late_rewards": int(sum(r.late for r in runs)),
        }
    oracle = result.oracle_reward()
    agents[ORACLE] = {
        "reward": _ci(oracle[:, -1], level),
        "mean_reward_per_step": float(oracle[:, -1].mean() / result.horizon),
    }
    ranking = sorted((a for a in agents if a != ORACLE), key=lambda a: agents[a]["regret"]["mean"])
    return {"horizon": result.horizon, "seeds": len(result.best), "level": level,
            "ranking_by_regret": ranking, "agents": agents}  # fmt: skip


def _ci(values: np.ndarray, level: float) -> dict[str, float]:
    mean, lo, hi = mean_interval(values, level)
    return {"mean": mean, "lo": lo, "hi": hi}


def write_curves(result: Result, path: Path, points: int = 200) -> None:
    steps = np.unique(np.linspace(1, result.horizon, min(points, result.horizon)).astype(int))
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["agent", "metric", "step", "mean", "lo", "hi"])
        curves = [(n, "regret", result.regret(n)) for n in result.runs]
        curves += [(n, "reward", result.reward(n)) for n in result.runs]
        curves.append((ORACLE, "reward", result.oracle_reward()))
        for name, metric, data in curves:
            b = band(data)
            for s in steps:
                out.writerow([name, metric, int(s), f"{b.mean[s - 1]:.6g}", f"{b.lo[s - 1]:.6g}",
                              f"{b.hi[s - 1]:.6g}"])  # fmt: skip


def plot(result: Result, path: Path, title: str) -> None:
    """Left: cumulative regret vs the oracle (lower is better; a flattening curve is learning).
    Middle: the mean on log-log axes, where a slope of 1 is linear regret (no learning) and ½
    the √T rate. Right: cumulative reward, oracle dashed. Shaded: 95% band of the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(17, 5))
    steps = np.arange(1, result.horizon + 1)
    order = sorted(result.runs, key=lambda n: float(result.regret(n)[:, -1].mean()))
    for name in order:
        regret = band(result.regret(name))
        slope = loglog_slope(regret.mean, 0.1)
        for ax, b, label in (
            (left, regret, name),
            (mid, regret, f"{name} (slope {slope:.2f})"),
            (right, band(result.reward(name)), name),
        ):
            (line,) = ax.plot(steps, b.mean, label=label, lw=1.4)
            if ax is not mid:  # a band reaching 0 has no place on a log axis
                ax.fill_between(steps, b.lo, b.hi, color=line.get_color(), alpha=0.2, lw=0)
    oracle = band(result.oracle_reward())
    right.plot(steps, oracle.mean, "k--", lw=1, label=ORACLE)
    mid.set_xscale("log")
    mid.set_yscale("log")
    left.set(title="cumulative regret (vs oracle)", xlabel="step", ylabel="Σ regret")
    mid.set(title="cumulative regret, log-log (slope 1 = linear)", xlabel="step")
    right.set(title="cumulative reward", xlabel="step", ylabel="Σ reward")
    for ax in (left, mid, right):
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{title}: {len(result.best)} seeds, 95% bands")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ope(estimates: Mapping[str, Mapping[str, Estimate]], path: Path, title: str) -> None:
    """Per policy, each estimator's value with its bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(estimates)
    kinds = sorted({k for e in estimates.values() for k in e})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4.5))
    width = 0.8 / max(len(kinds), 1)
    for j, kind in enumerate(kinds):
        xs, ys, err = [], [], []
        for i, name in enumerate(names):
            est = estimates[name].get(kind)
            if est is None:
                continue
            xs.append(i + j * width)
            ys.append(est.value)
            err.append((est.value - est.lo, est.hi - est.value))
        ax.bar(xs, ys, width, yerr=np.array(err).T, capsize=3, label=kind)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20, fontsize=8)
    ax.set(title=title, ylabel="estimated policy value (reward / step)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(data: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(value: object) -> object:
    if isinstance(value, Estimate):
        return {"value": value.value, "lo": value.lo, "hi": value.hi,
                "normal_lo": value.normal_lo, "normal_hi": value.normal_hi}  # fmt: skip
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _reproduce(scenario: Scenario) -> dict[str, Any]:
    """Replay a trace scenario's trace through the daemon config that logged it."""
    from banditd.config import load_settings
    from banditd.sim.replay import replay_trace

    assert scenario.daemon_config is not None
    assert scenario.trace_path is not None
    settings = load_settings(scenario.daemon_config)
    seed = scenario.trace_seed if scenario.trace_seed is not None else settings.seed
    template = (
        settings.policy_template.to_config("template") if settings.auto_create_policies else None
    )
    try:
        report = replay_trace(
            scenario.trace_path, settings.policy_configs(), seed, template=template
        )
    except RedactedTraceError as exc:  # a 'hash' trace: OPE ran, replay cannot
        return {"error": str(exc), "seed": seed}
    return {"decisions": report.decisions, "same_arm": report.same_arm,
            "reproduced": report.reproduced, "max_propensity_error": report.max_propensity_error,
            "outcomes": report.outcomes, "mismatches": report.mismatches, "seed": seed}  # fmt: skip


def run_scenario(scenario: Scenario, out: Path, progress: bool = True) -> dict[str, Any]:
    """Simulate (environment) or OPE (logged data) a scenario; write <name>.png/.json/.csv."""
    from banditd.sim.simulation import simulate
    from banditd.sim.tune import evaluate_logged

    out.mkdir(parents=True, exist_ok=True)
    stem = out / scenario.name
    meta = {"scenario": scenario.name, "description": scenario.description,
            "file": str(scenario.path)}  # fmt: skip
    if scenario.env is None:
        assert scenario.logged is not None
        configs = {n: scenario.policy_config(n) for n in scenario.policies}
        estimates = evaluate_logged(scenario.logged, configs)
        summary = meta | {"method": "ope", "data": scenario.logged.name, "rows": scenario.logged.n,
                          "estimates": estimates}  # fmt: skip
        if scenario.daemon_config is not None:
            summary["replay"] = _reproduce(scenario)
        plot_ope(
            estimates, stem.with_suffix(".png"), f"{scenario.name}: OPE on {scenario.logged.name}"
        )
        write_json(summary, stem.with_suffix(".json"))
        return summary
    result = simulate(scenario.env, scenario.agents(), scenario.horizon, range(scenario.seeds),
                      scenario.delay, scenario.interval_s, progress=progress)  # fmt: skip
    summary = meta | {"method": "simulation"} | summarize(result)
    plot(result, stem.with_suffix(".png"), scenario.name)
    write_curves(result, stem.with_suffix(".csv"))
    write_json(summary, stem.with_suffix(".json"))
    return summary
