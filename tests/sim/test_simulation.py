"""The simulator drives the daemon's Router: reproducible, learning, delay-aware."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import banditd.sim.replay as replay_module
from banditd.features.schema import NumericFeature
from banditd.policies.spec import PolicyConfig
from banditd.sim.delays import DelayModel
from banditd.sim.env import DriftEnv, Failure, LinearEnv, TableEnv, load_table
from banditd.sim.metrics import loglog_slope
from banditd.sim.replay import RouterAgent
from banditd.sim.simulation import run_episode, simulate


def _linucb(env, **kw) -> PolicyConfig:
    numeric = tuple(NumericFeature(n) for n in env.feature_names)
    return PolicyConfig("linucb", arms=env.arms, numeric=numeric, **kw)


def _agents(env, config):
    from banditd.sim.baselines import UniformRandom

    return [
        ("linucb", lambda e, ep, seed: RouterAgent("linucb", config, e.costs, seed)),
        ("random", lambda e, ep, seed: UniformRandom(np.random.default_rng(seed))),
    ]


def test_seeded_runs_are_reproducible_bit_for_bit():
    """Same scenario, same seeds: identical choices and identical float curves."""
    env = LinearEnv(4, 3)
    config = _linucb(env, alpha=0.5, epsilon=0.1)
    delay = DelayModel("exponential", mean_s=5.0, drop=0.1)
    runs = [simulate(env, _agents(env, config), 300, [0, 1], delay) for _ in range(2)]
    for name in ("linucb", "random"):
        for a, b in zip(runs[0].runs[name], runs[1].runs[name], strict=True):
            np.testing.assert_array_equal(a.arms, b.arms)
            assert a.chosen_mean.tobytes() == b.chosen_mean.tobytes()
            assert a.reward.tobytes() == b.reward.tobytes()
    assert not np.array_equal(runs[0].runs["linucb"][0].arms, runs[0].runs["linucb"][1].arms)


def test_linucb_regret_is_sublinear_while_random_is_linear():
    """On a linear environment LinUCB's log-log regret slope is well below 1; random's is ~1."""
    env = LinearEnv(5, 5, noise=0.1)
    result = simulate(env, _agents(env, _linucb(env, alpha=0.5)), 2000, [0, 1, 2], DelayModel())
    linucb = result.regret("linucb").mean(axis=0)
    random = result.regret("random").mean(axis=0)
    assert loglog_slope(linucb, 0.2) < 0.6
    assert loglog_slope(random, 0.2) > 0.9
    assert linucb[-1] < 0.1 * random[-1]


def test_sync_drive_makes_the_same_decisions_as_the_async_router(monkeypatch):
    """drive() runs the Router's coroutines; an event loop running them decides identically."""
    env = LinearEnv(4, 3)
    config = _linucb(env, alpha=0.5, epsilon=0.2, reward_wait_s=8.0)
    episode = env.episode(400, np.random.default_rng(0))
    delays = DelayModel("exponential", mean_s=4.0, drop=0.2).sample(
        400, np.random.default_rng(1), 1.0
    )
    fast = run_episode(RouterAgent("p", config, env.costs, 7), episode, delays, 1.0)
    loop = asyncio.new_event_loop()
    try:
        monkeypatch.setattr(replay_module, "drive", loop.run_until_complete)
        slow = run_episode(RouterAgent("p", config, env.costs, 7), episode, delays, 1.0)
    finally:
        loop.close()
    np.testing.assert_array_equal(fast.arms, slow.arms)
    assert fast.late == slow.late > 0  # some rewards came after reward_wait_s


def test_late_rewards_are_settled_by_expiry():
    """Rewards slower than reward_wait_s count as late and the store does not keep them."""
    env = LinearEnv(3, 2)
    agent = RouterAgent("p", _linucb(env, reward_wait_s=2.0), env.costs, 0)
    episode = env.episode(200, np.random.default_rng(0))
    run = run_episode(agent, episode, np.full(200, 10.0), 1.0)
    assert run.late > 150
    assert agent.store.pending_count <= 3


def test_withdrawn_arms_are_never_offered():
    """An arm taken offline is not a candidate, so no agent can pick it."""
    env = DriftEnv(LinearEnv(4, 3), failures=(Failure(arm=2, start=0.0, end=1.0, withdraw=True),))
    result = simulate(env, _agents(env, _linucb(env)), 200, [0], DelayModel())
    for runs in result.runs.values():
        assert 2 not in set(runs[0].arms.tolist())


def test_full_information_table_from_csv(tmp_path):
    """A CSV with f:/r:/c: columns becomes a TableEnv whose oracle is the row maximum."""
    path = tmp_path / "table.csv"
    path.write_text("f:len,r:small,r:large,c:small,c:large\n0.1,0.2,0.9,0.1,1\n0.5,0.7,0.6,0.1,1\n")
    env = load_table(path)
    assert isinstance(env, TableEnv)
    assert env.arms == ("small", "large")
    np.testing.assert_allclose(env.costs, [0.1, 1.0])
    episode = env.episode(50, np.random.default_rng(0))
    assert set(np.round(episode.best_mean(), 6).tolist()) <= {0.9, 0.7}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("fixed", 3.0), ("none", 0.0)],
)
def test_delay_models(kind, expected):
    """Fixed and zero delays are what they say; drop gives inf."""
    d = DelayModel(kind, mean_s=3.0).sample(10, np.random.default_rng(0), 1.0)
    np.testing.assert_array_equal(d, np.full(10, expected))
    dropped = DelayModel("fixed", mean_s=3.0, drop=1.0).sample(10, np.random.default_rng(0), 1.0)
    assert np.isinf(dropped).all()
