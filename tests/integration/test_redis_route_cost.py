"""Route does not move the model over the network: round trips and bytes per Route."""

from __future__ import annotations

from tests.integration.route_cost import measure


async def test_route_costs_two_round_trips_and_no_state_when_nothing_changed(redis_url: str):
    """Steady state: one HMGET of stamps + one record script; no sums fetched."""
    cost = await measure(redis_url, features=15, feedback=False, routes=50)
    assert cost.round_trips == 2 * 50
    assert cost.bytes_out < 50 * 200  # stamps and a status, not 3.7 KB of sums per Route


async def test_route_after_feedback_fetches_only_the_changed_arm(redis_url: str):
    """After a Feedback, the next Route refetches one arm's sums, not all three."""
    cost = await measure(redis_url, features=15, feedback=True, routes=50)
    # stamps, one arm's sums, record; settle (the first Route follows no Feedback: 3)
    assert cost.round_trips == 4 * 50 - 1
    one_arm = cost.state_bytes // 3
    assert cost.bytes_out < 50 * (one_arm + 400)
