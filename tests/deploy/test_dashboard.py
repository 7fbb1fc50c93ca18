"""The example Grafana dashboard queries only metrics the daemon declares, and all the key ones."""

from __future__ import annotations

import json
import re
from typing import Any

from banditd.server.metrics import Metrics
from tests.deploy.conftest import DEPLOY

SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
# What issue #7 asks a dashboard to show, by series name.
KEY_SERIES = {
    "banditd_rpc_requests_total", "banditd_rpc_latency_seconds_bucket",
    "banditd_feedback_outcomes_total", "banditd_pending_decisions", "banditd_model_version",
    "banditd_adapter_cache_hits_total", "banditd_adapter_cache_misses_total",
    "banditd_adapter_cache_loads_total", "banditd_adapter_cache_evictions_total",
    "banditd_feature_cache_hits_total", "banditd_feature_cache_misses_total",
    "banditd_store_errors_total", "banditd_degraded",
    # the learning path's state (health banditd.v1.Learning)
    "banditd_store_up", "banditd_outage_buffered", "banditd_last_settle_timestamp_seconds",
}  # fmt: skip


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def _declared() -> set[str]:
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in SUFFIXES[family.type]
    }


def test_dashboard_uses_only_declared_series_and_covers_the_key_ones() -> None:
    """Every banditd_* name in a panel query exists; every key series has a panel."""
    dashboard = json.loads((DEPLOY / "grafana" / "banditd.json").read_text(encoding="utf-8"))
    exprs = _exprs(dashboard["panels"])
    assert exprs
    used = {name for e in exprs for name in re.findall(r"\bbanditd_[a-z_]+", e)}
    assert used - _declared() == set()
    assert KEY_SERIES - used == set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
