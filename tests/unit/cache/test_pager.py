"""The Pager: paging price, forced exploration, epoch plans, and its config section."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from banditd.cache.controller import ControllerParams, Evict, Load, PagingCost, Residency, force
from banditd.cache.pager import Pager, PagingConfig
from banditd.cache.residency import InMemoryResidencyStore
from banditd.config import Settings
from banditd.errors import InvalidRequestError
from banditd.policies.choice import Choice

IDS = ["a", "b", "c"]


@given(
    st.lists(st.floats(0.01, 1), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
    st.floats(0, 1),
)
def test_forced_exploration_mixture_is_a_distribution(
    weights: list[float], eligible: list[bool], rate: float
) -> None:
    """(1−ε)p + ε·uniform(eligible) sums to 1 and gives each eligible arm at least ε/#eligible."""
    p = np.asarray(weights) / sum(weights)
    mask = np.asarray(eligible)
    mixed = force(p, mask, rate)
    assert mixed.sum() == pytest.approx(1.0)
    if mask.any():
        assert np.all(mixed[mask] >= rate / mask.sum() - 1e-12)


async def test_pager_prices_and_plans_per_epoch() -> None:
    """Non-resident arms pay weight·latency; an epoch end loads the arm with the best utility."""
    config = PagingConfig(
        capacity_slots=1,
        cost=PagingCost(weight=0.01, default_ms=20.0),
        controller=ControllerParams(epoch_steps=5, pinned=frozenset()),
    )
    pager = Pager({"p": config}, InMemoryResidencyStore())
    await pager.report("gpu0", Residency(frozenset({"a"}), 1, load_ms={"c": 40.0}))
    residency = await pager.residency("gpu0", config)
    assert pager.penalty(residency, IDS, config).tolist() == pytest.approx([0.0, 0.2, 0.4])
    advice = None
    for t in range(5):
        utility = np.array([0.1, 0.2, 0.9])  # c is best everywhere
        advice = await pager.observe(config, "gpu0", residency, IDS, utility, "c", float(t))
    assert advice is not None
    assert advice.must_load
    plan = await pager.current("gpu0")
    assert plan.epoch == 1
    assert plan.directives == (Evict("a"), Load("c"))
    assert plan.residency.resident == frozenset({"c"})


async def test_pager_explore_keeps_choice_without_forcing() -> None:
    """With c = 0 (POLAR), Route's choice is left as the policy made it."""
    config = PagingConfig()
    pager = Pager({"p": config}, InMemoryResidencyStore())
    z = np.zeros(3)
    choice = Choice(0, z, z, z, z, np.array([1.0, 0.0, 0.0]))
    rng = np.random.default_rng(0)
    out = pager.explore(config, "r", Residency(frozenset(), 1), IDS, choice, rng)
    assert out is choice


async def test_replica_names_are_checked() -> None:
    """Empty or whitespace replica names are refused."""
    pager = Pager({"p": PagingConfig()}, InMemoryResidencyStore())
    with pytest.raises(InvalidRequestError):
        await pager.residency("has space", PagingConfig())


def test_paging_settings_map_to_core_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-policy [policies.X.paging] section (and its env vars) become a PagingConfig."""
    monkeypatch.setenv("BANDITD_POLICIES__LORA__PAGING__EPOCH_STEPS", "64")
    settings = Settings(
        policies={
            "lora": {
                "arms": ["a"],
                "paging": {
                    "enabled": True,
                    "capacity_slots": 3,  # type: ignore[dict-item]
                    "doubling": True,
                    "pinned": ["a"],
                    "latency_weight": 0.001,
                },
            },
            "plain": {"arms": ["a"]},
        }
    )
    configs = settings.paging_configs()
    assert list(configs) == ["lora"]
    c = configs["lora"]
    assert c.capacity_slots == 3
    assert c.cost.weight == 0.001
    assert c.controller.doubling
    assert c.controller.pinned == frozenset({"a"})
