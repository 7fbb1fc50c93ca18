"""Route does not move the model over the network: round trips and bytes per Route."""

from __future__ import annotations

from tests.integration.route_cost import measure


async def test_route_costs_two_round_trips_and_no_state_when_nothing_changed(redis_url: str):
    """Steady state: one load script (stamps) + one record script; no sums fetched."""
    cost = await measure(redis_url, features=15, feedback=False, routes=50)
    assert cost.round_trips == 2 * 50
    assert cost.bytes_out < 50 * 200  # stamps and a status, not 3.7 KB of sums per Route


async def test_route_after_feedback_fetches_only_the_changed_arm(redis_url: str):
    """After a Feedback, the next Route refetches one arm's sums, not all three, in the same
    round trip as the stamps (load.lua)."""
    cost = await measure(redis_url, features=15, feedback=True, routes=50)
    assert cost.round_trips == 3 * 50  # load (stamps + the changed arm's sums), record; settle
    # HMGETs inside the scripts: settle's, load's stamps, and load's sums for the 49 Routes that
    # follow a Feedback (the first follows none)
    assert cost.commands["hmget"] == 50 + 50 + 49
    one_arm = cost.state_bytes // 3
    assert cost.bytes_out < 50 * (one_arm + 400)
