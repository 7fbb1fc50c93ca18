"""Route does not move the model over the network: round trips and bytes per Route."""

from __future__ import annotations

import pytest

from tests.integration.route_cost import measure

# One call at a time, coalescing has nothing to coalesce: each command is its own pipeline.
coalesce = pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "pooled"])


@coalesce
async def test_route_costs_two_round_trips_and_no_state_when_nothing_changed(
    redis_url: str, coalesce: bool
):
    """Steady state: one load script (stamps) + one record script; no sums fetched."""
    cost = await measure(redis_url, features=15, feedback=False, routes=50, coalesce=coalesce)
    assert cost.round_trips == 2 * 50
    assert cost.bytes_out < 50 * 200  # stamps and a status, not 3.7 KB of sums per Route


@coalesce
async def test_route_after_feedback_fetches_no_state(redis_url: str, coalesce: bool):
    """The replica that settled a Feedback added it to its own cached arm (settle.lua answers
    with the decision's vector and the arm's stamps), so the next Route fetches no sums: the
    same two scripts, and no more bytes than the vector."""
    cost = await measure(redis_url, features=15, feedback=True, routes=50, coalesce=coalesce)
    assert cost.round_trips == 3 * 50  # load (stamps), record; settle
    # HMGETs inside the scripts: settle's pending read and load's stamps; no sums fetch
    assert cost.commands["hmget"] == 50 + 50
    one_arm = cost.state_bytes // 3
    assert cost.bytes_out < 50 * 600 < 50 * one_arm  # stamps, statuses and x (136 B at d=16)
