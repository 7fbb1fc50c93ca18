"""Smoke test of the bench's policy-math section (quick mode; speed is printed, never asserted)."""

from __future__ import annotations

import importlib.util

import pytest

from bench import core

pytest.importorskip("mabwiser")


def test_quick_core_section_runs_and_linucb_matches_mabwiser() -> None:
    """A few hundred rounds of every available contender; LinUCB decisions equal MABWiser's."""
    plan = core.Plan(rounds=300, repeats=1, budget_s=60.0)
    names = [n for n in core.CONTENDERS if not n.startswith("VW")]
    if importlib.util.find_spec("vowpalwabbit") is not None:
        names += [n for n in core.CONTENDERS if n.startswith("VW")]
    summary = core.summarise(plan, core.measure(plan, names))
    rows = summary["rows"]
    assert isinstance(rows, list)
    assert {row["implementation"] for row in rows} == set(names)
    assert all(row["done"] == plan.rounds for row in rows)
    assert all(row["rounds/s (median)"] > 0 for row in rows)
    agreement = summary["decision_agreement"]
    assert isinstance(agreement, dict)
    assert agreement["banditd LinUCB vs MABWiser LinUCB"] == 1.0
    assert agreement["banditd LinUCB vs banditd Router LinUCB"] == 1.0
