"""Invariants of the POLAR cache controller (select + plan) and its load budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from banditd.cache.controller import (
    ControllerParams,
    EpochClock,
    Evict,
    Load,
    LoadBudget,
    PagingCost,
    Residency,
    coverage,
    epoch_length,
    exploration_rate,
    plan,
    select,
)

ADAPTERS = [f"a{i}" for i in range(8)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Residency, ControllerParams, np.ndarray, list[int]]:
    n = draw(st.integers(1, len(ADAPTERS)))
    adapters = ADAPTERS[:n]
    slots = draw(st.integers(0, n))
    sizes = {a: draw(st.integers(1, 100)) for a in adapters}
    capacity_bytes = draw(st.sampled_from([0, 50, 150, 400]))
    pinned = frozenset(draw(st.lists(st.sampled_from(adapters), max_size=3)))
    # The replica may report more than it can hold (capacity shrunk), pinned ones included.
    resident = frozenset(draw(st.lists(st.sampled_from(adapters), max_size=n)))
    residency = Residency(resident, slots, capacity_bytes, sizes)
    params = ControllerParams(
        epoch_steps=draw(st.integers(1, 50)),
        doubling=draw(st.booleans()),
        forced_exploration=draw(st.sampled_from([0.0, 0.5, 5.0])),
        max_loads=draw(st.integers(0, 3)),
        pinned=pinned,
    )
    rows = draw(st.integers(1, 6))
    values = st.floats(-1, 1, allow_nan=False)
    utility = np.array(
        draw(st.lists(st.lists(values, min_size=n, max_size=n), min_size=rows, max_size=rows))
    )
    pulls = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    return residency, params, utility, pulls


def _run(s: tuple[Residency, ControllerParams, np.ndarray, list[int]], budget: int | None = None):
    residency, params, utility, _pulls = s
    adapters = ADAPTERS[: utility.shape[1]]
    target = select(adapters, utility, residency, params, [0.1] * len(adapters), 10)
    return target, plan(residency, target, params, budget=budget)


@given(scenarios())
def test_target_fits_capacity(s: tuple[Residency, ControllerParams, np.ndarray, list[int]]) -> None:
    """The chosen resident set never exceeds the slots or the bytes."""
    target, _ = _run(s)
    assert s[0].fits(frozenset(target))
    assert len(set(target)) == len(target)


@given(scenarios(), st.one_of(st.none(), st.integers(0, 4)))
def test_plan_never_overfills_nor_evicts_pinned(
    s: tuple[Residency, ControllerParams, np.ndarray, list[int]], budget: int | None
) -> None:
    """After a plan: within capacity (unless pinned alone overflow), pinned kept, loads bounded."""
    residency, params, _, _ = s
    _, directives = _run(s, budget)
    after = residency.apply(directives)
    pinned_resident = residency.resident & params.pinned
    if residency.fits(frozenset(pinned_resident)):
        assert after.fits(after.resident)
    assert pinned_resident <= after.resident
    assert not any(isinstance(d, Evict) and d.adapter in params.pinned for d in directives)
    loads = [d for d in directives if isinstance(d, Load)]
    if params.max_loads:
        assert len(loads) <= params.max_loads
    if budget is not None:
        assert len(loads) <= budget
    assert all(d.adapter not in residency.resident for d in loads)
    evicted = {d.adapter for d in directives if isinstance(d, Evict)}
    assert evicted <= residency.resident


@given(scenarios())
def test_plan_is_idempotent(s: tuple[Residency, ControllerParams, np.ndarray, list[int]]) -> None:
    """Planning the same target again after carrying out the plan asks for nothing more."""
    residency, params, _, _ = s
    target, directives = _run(s)
    if params.max_loads:
        return  # a capped plan may legitimately need another epoch
    after = residency.apply(directives)
    assert plan(after, target, params) == []


@given(
    st.floats(0.1, 20),
    st.integers(1, 5),
    st.lists(st.tuples(st.floats(0, 2), st.integers(0, 6)), min_size=1, max_size=40),
)
def test_load_budget_respects_rate(rate: float, burst: int, asks: list[tuple[float, int]]) -> None:
    """Over any run, granted loads ≤ burst + rate · elapsed time."""
    budget = LoadBudget(rate, burst, float(burst), 0.0)
    now, granted = 0.0, 0
    for dt, wanted in asks:
        now += dt
        got, budget = budget.take(now, wanted)
        assert 0 <= got <= wanted
        granted += got
        assert granted <= burst + rate * now + 1e-9


def test_select_prefers_the_adapters_that_cover_the_contexts() -> None:
    """Two context types, two specialists and one mediocre generalist: K=2 keeps the experts."""
    utility = np.array([[1.0, 0.0, 0.6], [0.0, 1.0, 0.6]] * 5)
    residency = Residency(frozenset({"gen"}), 2)
    target = select(["x", "y", "gen"], utility, residency, ControllerParams(), horizon=100)
    assert set(target) == {"x", "y"}
    directives = plan(residency, target, ControllerParams())
    assert directives[0] == Evict("gen")
    assert set(directives[1:]) == {Load("x"), Load("y")}


def test_select_keeps_resident_when_a_swap_does_not_pay_for_its_load() -> None:
    """A slightly better adapter is not loaded if its load cost exceeds the epoch's gain."""
    utility = np.array([[0.50, 0.51]] * 4)
    residency = Residency(frozenset({"old"}), 1)
    params = ControllerParams()
    assert select(["old", "new"], utility, residency, params, [1.0, 1.0], horizon=10) == ("old",)
    assert select(["old", "new"], utility, residency, params, [1.0, 1.0], horizon=1000) == ("new",)


def test_exploration_rate_decays_as_inverse_sqrt() -> None:
    """POLAR+ forces exploration with probability min(1, c/sqrt(t)); c = 0 never."""
    assert exploration_rate(0.5, 1) == 0.5
    assert exploration_rate(0.5, 100) == pytest.approx(0.05)
    assert exploration_rate(4.0, 4) == 1.0
    assert exploration_rate(0.0, 10) == 0.0


def test_epoch_doubling_and_clock() -> None:
    """POLAR+ epochs last L·2^k; fixed POLAR epochs last L."""
    polar_plus = ControllerParams(epoch_steps=3, doubling=True)
    assert [epoch_length(polar_plus, k) for k in range(4)] == [3, 6, 12, 24]
    assert epoch_length(ControllerParams(epoch_steps=3), 5) == 3
    clock, ends = EpochClock(), []
    for _ in range(21):
        clock, boundary = clock.tick(polar_plus)
        ends.append(boundary)
    assert [i + 1 for i, b in enumerate(ends) if b] == [3, 9, 21]


def test_paging_cost_uses_measured_latency_first() -> None:
    """Price = weight · (measured load_ms, else default + per-MB); resident adapters are free."""
    r = Residency(frozenset({"a"}), 4, 0, {"b": 200_000_000}, {"c": 80.0})
    cost = PagingCost(weight=0.01, default_ms=10.0, ms_per_mb=0.5)
    assert cost.price("a", r) == 0.0
    assert cost.price("b", r) == pytest.approx(0.01 * (10.0 + 100.0))
    assert cost.price("c", r) == pytest.approx(0.8)
    assert coverage(np.array([[1.0, 0.0]]), []) == 0.0
