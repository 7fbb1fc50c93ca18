"""HotStats: the hot-path series read back through the Prometheus registry, as a scrape would."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest

from banditd.server.metrics import LATENCY_BUCKETS_S, Metrics


def test_latency_histogram_buckets_are_cumulative_and_inclusive() -> None:
    """An observation equal to a bucket bound counts in that bucket (le is inclusive)."""
    m = Metrics()
    for elapsed in (0.0001, 0.00025, 0.0003, 0.001, 3.0):
        m.hot.rpc("Route", "OK", elapsed)
    sample = m.registry.get_sample_value
    labels = {"rpc": "Route", "code": "OK"}
    assert sample("banditd_rpc_requests_total", labels) == 5
    assert sample("banditd_rpc_latency_seconds_count", labels) == 5
    assert sample("banditd_rpc_latency_seconds_sum", labels) == pytest.approx(3.00165)
    expected = {0.00025: 2, 0.0005: 3, 0.001: 4, 2.5: 4}
    for bound, count in expected.items():
        assert sample("banditd_rpc_latency_seconds_bucket", {**labels, "le": str(bound)}) == count
    assert sample("banditd_rpc_latency_seconds_bucket", {**labels, "le": "+Inf"}) == 5
    assert len(LATENCY_BUCKETS_S) == 13


def test_decisions_outcomes_versions_and_degraded_are_exported() -> None:
    """Counters per label, the latest model version per policy, and the degraded flag."""
    m = Metrics()
    m.hot.decided("chat", 3, degraded=False)
    m.hot.decided("chat", 4, degraded=True)
    m.hot.outcome("applied")
    m.hot.outcome("applied")
    m.hot.outcome("unknown")
    sample = m.registry.get_sample_value
    assert sample("banditd_decisions_total", {"policy": "chat"}) == 2
    assert sample("banditd_model_version", {"policy": "chat"}) == 4
    assert sample("banditd_degraded") == 1
    assert sample("banditd_feedback_outcomes_total", {"outcome": "applied"}) == 2
    assert sample("banditd_feedback_outcomes_total", {"outcome": "unknown"}) == 1
    assert sample("banditd_feedback_outcomes_total", {"outcome": "expired"}) is None
    text = generate_latest(m.registry).decode()
    assert "# TYPE banditd_rpc_latency_seconds histogram" in text
    assert 'banditd_decisions_total{policy="chat"} 2.0' in text


def test_last_settle_timestamp_moves_only_when_a_decision_settles() -> None:
    """applied, defaulted and dropped stamp the time; a duplicate or a refusal does not."""
    m = Metrics()
    sample = m.registry.get_sample_value
    assert sample("banditd_last_settle_timestamp_seconds") == 0
    for outcome in ("duplicate", "expired", "unknown"):
        m.hot.outcome(outcome)
    assert sample("banditd_last_settle_timestamp_seconds") == 0
    for outcome in ("applied", "defaulted", "dropped"):
        m.hot.last_settle_s = 0.0
        before = time.time()
        m.hot.outcome(outcome)
        assert before <= sample("banditd_last_settle_timestamp_seconds") <= time.time(), outcome
