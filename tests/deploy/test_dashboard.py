"""The example Grafana dashboard has a panel for every series a running daemon exports (and
the supervisor of worker processes adds), and queries no series the daemon does not export."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from banditd.server.app import build_daemon, start_metrics
from banditd.server.supervisor import worker_families
from tests.deploy.conftest import DEPLOY
from tests.integration.conftest import daemon_settings

# The series names a family of each type exposes.
SUFFIXES = {
    "counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",), "summary": ("", "_count", "_sum"), "unknown": ("",),
}  # fmt: skip


class _Fixed(CollectorRegistry):
    """A registry of fixed families (the supervisor's own, server/supervisor.py)."""

    def __init__(self, families: list[Metric]) -> None:
        super().__init__()
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def _panels(node: Any) -> Iterator[dict[str, Any]]:
    for panel in node:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels inside a collapsed row


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Family name -> its series names, from one scrape of a daemon's /metrics over HTTP (port
    0), as `serve` starts it: every family shows there, with samples or not yet."""
    settings = daemon_settings()
    settings = daemon_settings(server={**settings.server.model_dump(),
                                       "metrics_listen": "127.0.0.1:0"})  # fmt: skip

    async def scrape() -> str:
        # In a loop of its own: grpc.aio servers need one, and a sync fixture has none once an
        # async test before it has run (the suite order made this fail in `make test`).
        daemon = build_daemon(settings)
        http = start_metrics(settings, daemon.metrics)
        assert http is not None
        try:
            url = f"http://127.0.0.1:{http.server_port}/metrics"
            with await asyncio.to_thread(urllib.request.urlopen, url, timeout=5) as reply:
                return str(reply.read().decode())
        finally:
            http.shutdown()
            http.server_close()
            await daemon.stop(grace_s=0)

    text = asyncio.run(scrape())
    supervisor = generate_latest(_Fixed(worker_families(2, {0: True}, {0: 1}, {0: 5.0}))).decode()
    families = {
        family.name: {family.name + suffix for suffix in SUFFIXES[family.type]}
        for family in text_string_to_metric_families(text + supervisor)
    }
    # prometheus_client writes each counter's and histogram's creation time as a gauge family
    # of its own (`<name>_created`): a timestamp for rate() to detect resets, not a panel.
    return {
        name: series
        for name, series in families.items()
        if not (name.endswith("_created") and name.removesuffix("_created") in families)
    }


@pytest.fixture(scope="module")
def used() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "banditd.json").read_text(encoding="utf-8"))
    exprs = [e for panel in _panels(dashboard["panels"]) for e in _exprs(panel.get("targets"))]
    assert exprs
    return {name for e in exprs for name in re.findall(r"\b[a-z][a-z0-9_]*(?=[{\s)\[]|$)", e)}


def test_the_scrape_has_the_daemon_and_process_series(exported: dict[str, set[str]]) -> None:
    """What the coverage check runs over: banditd_*, process_* and python_* families."""
    names = set(exported)
    assert {"banditd_rpc_requests", "banditd_store_busy", "banditd_decisions_unrecorded",
            "banditd_pending_lost", "banditd_outage_buffered", "banditd_inputs_clipped",
            "process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
            "python_gc_collections"} <= names  # fmt: skip
    assert {n.split("_", 1)[0] for n in names} == {"banditd", "process", "python"}


def test_every_exported_series_is_on_a_panel(exported: dict[str, set[str]], used: set[str]) -> None:
    """Each family the daemon exports has at least one of its series in a panel's query."""
    missing = sorted(name for name, series in exported.items() if not series & used)
    assert missing == []


def test_dashboard_queries_only_exported_series(
    exported: dict[str, set[str]], used: set[str]
) -> None:
    """Every banditd_/process_/python_ name in a query is one the daemon exports."""
    series = {s for names in exported.values() for s in names}
    ours = {n for n in used if n.startswith(("banditd_", "process_", "python_"))}
    assert ours - series == set()


def test_queries_close_every_bracket() -> None:
    """A cheap syntax check of each query (no Prometheus here to parse them)."""
    dashboard = json.loads((DEPLOY / "grafana" / "banditd.json").read_text(encoding="utf-8"))
    for expr in _exprs(dashboard["panels"]):
        depth = []
        for char in expr:
            if char in "([{":
                depth.append("([{".index(char))
            elif char in ")]}":
                assert depth, expr
                assert depth.pop() == ")]}".index(char), expr
        assert not depth, expr


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    """Grafana keys panels by id; two panels on one grid cell hide each other."""
    dashboard = json.loads((DEPLOY / "grafana" / "banditd.json").read_text(encoding="utf-8"))
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
