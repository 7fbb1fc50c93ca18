"""Quick seeded paging simulation: adaptive cache control against LRU (docs/paging.md)."""

from __future__ import annotations

import numpy as np
import pytest

from banditd.sim.paging import PagingScenario, best_cache, build_env, run, slope

SEEDS = (0, 1, 2)


def test_polar_beats_lru_on_regret_and_paging_latency() -> None:
    """Over 3 seeded environments (T=4000): POLAR and POLAR+ page less and regret less than LRU."""
    s = PagingScenario(horizon=4000)
    results = {p: [run(p, s, seed) for seed in SEEDS] for p in ("lru", "polar", "polar+")}
    regret = {p: float(np.mean([r.regret[-1] for r in rs])) for p, rs in results.items()}
    latency = {p: float(np.mean([r.latency_ms for r in rs])) for p, rs in results.items()}
    assert regret["polar"] < regret["lru"]
    assert regret["polar+"] < regret["lru"]
    assert latency["polar"] < 0.6 * latency["lru"]
    assert latency["polar+"] < 0.6 * latency["lru"]
    mean_curve = np.mean([r.regret for r in results["polar"]], axis=0)
    assert slope(mean_curve) < 0.8  # sublinear over [T/10, T]


def test_oracle_regret_is_only_its_initial_loads() -> None:
    """The oracle holds S* and routes with the true means: its regret is the initial paging."""
    s = PagingScenario(horizon=500)
    r = run("oracle", s, 0)
    assert r.loads == s.capacity
    env = build_env(s, np.random.default_rng([0, 0]))
    xs = env.contexts(np.random.default_rng([0, 9]), 4000)
    star = best_cache(env, s, xs)
    assert r.regret[-1] == pytest.approx(s.latency_weight * env.latency_ms[list(star)].sum())


def test_runs_are_reproducible() -> None:
    """Same seed, same policy: the same regret curve."""
    s = PagingScenario(horizon=300)
    assert np.array_equal(run("polar+", s, 7).regret, run("polar+", s, 7).regret)
