"""The pod's /metrics from worker scrapes: sums, gauge rules, per-process labels, and counters
that do not go backwards when a worker is replaced."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry
from prometheus_client.metrics_core import Metric

from banditd.server.metrics import Metrics
from banditd.server.pod_metrics import GAUGES, Retired, merge, parse, rpcs_answered, rule


def scrape(metrics: Metrics) -> list[Metric]:
    return parse(generate_latest(metrics.registry).decode())


def value(families: list[Metric], sample: str, labels: dict[str, str] | None = None) -> float:
    registry = CollectorRegistry()

    class Fixed:
        def collect(self) -> list[Metric]:
            return families

    registry.register(Fixed())  # type: ignore[arg-type]
    got = registry.get_sample_value(sample, labels or {})
    assert got is not None, (sample, labels)
    return got


def worker(rpcs: int, version: int, serving: int, buffered: int) -> Metrics:
    m = Metrics()
    for _ in range(rpcs):
        m.hot.rpc("Route", "OK", 0.0003)
    m.hot.decided("chat", version, degraded=False)
    m.serving.set(serving)
    m.store_up.set(1)
    m.outage_buffered.set(buffered)
    m.store_errors.inc(2)
    return m


def test_counters_and_histograms_sum_gauges_follow_their_rule() -> None:
    a, b = worker(3, 7, 1, 4), worker(5, 9, 0, 1)
    pod = list(merge({"0": scrape(a), "1": scrape(b)}))
    labels = {"rpc": "Route", "code": "OK"}
    assert value(pod, "banditd_rpc_requests_total", labels) == 8
    assert value(pod, "banditd_rpc_latency_seconds_count", labels) == 8
    assert value(pod, "banditd_rpc_latency_seconds_bucket", {**labels, "le": "0.0005"}) == 8
    assert value(pod, "banditd_store_errors_total") == 4
    assert value(pod, "banditd_model_version", {"policy": "chat"}) == 9  # max
    assert value(pod, "banditd_serving") == 0  # min: one worker is not ready
    assert value(pod, "banditd_store_up") == 1
    assert value(pod, "banditd_outage_buffered") == 5  # sum
    assert value(pod, "banditd_build_info", {"version": _version(pod)}) == 1  # max, not 2


def test_process_series_are_per_worker_not_summed() -> None:
    """RSS, CPU, fds of each process carry worker="<i>" (or "supervisor")."""
    pod = list(merge({"0": scrape(Metrics()), "1": scrape(Metrics()), "supervisor":
                      scrape(Metrics())}))  # fmt: skip
    for w in ("0", "1", "supervisor"):
        assert value(pod, "process_max_fds", {"worker": w}) > 0
        assert value(pod, "python_gc_collections_total", {"generation": "2", "worker": w}) >= 0
    text = generate_latest(_registry(pod)).decode()
    assert not [line for line in text.splitlines() if line.startswith("process_max_fds ")]


def test_a_replaced_worker_keeps_counting_so_counters_never_go_backwards() -> None:
    """Worker 1 dies after a scrape; its replacement starts from 0, the pod's sum does not."""
    old, new, other = worker(5, 1, 1, 0), worker(0, 1, 1, 0), worker(3, 1, 1, 0)
    before = list(merge({"0": scrape(other), "1": scrape(old)}))
    retired = Retired()
    retired.retire(scrape(old))
    new.hot.rpc("Route", "OK", 0.0003)
    after = list(merge({"0": scrape(other), "1": scrape(new)}, retired))
    labels = {"rpc": "Route", "code": "OK"}
    assert value(before, "banditd_rpc_requests_total", labels) == 8
    assert value(after, "banditd_rpc_requests_total", labels) == 9
    assert value(after, "banditd_store_errors_total") == 6  # 3 lives x 2
    # a dead worker's gauges are gone, not summed on
    assert value(after, "banditd_outage_buffered") == 0
    assert rpcs_answered(scrape(old)) == 5


def test_every_gauge_the_daemon_exports_has_a_merge_rule() -> None:
    """A new gauge must say whether the pod's value is the sum, max or min of the workers'."""
    gauges = {
        f.name for f in scrape(Metrics()) if f.type == "gauge" and not f.name.endswith("_created")
    }
    per_process = {g for g in gauges if rule(g, "gauge") == "worker"}
    assert gauges - per_process == set(GAUGES), gauges - per_process ^ set(GAUGES)


def _version(families: list[Metric]) -> str:
    (info,) = [f for f in families if f.name == "banditd_build_info"]
    return info.samples[0].labels["version"]


def _registry(families: list[Metric]) -> CollectorRegistry:
    registry = CollectorRegistry()

    class Fixed:
        def collect(self) -> list[Metric]:
            return families

    registry.register(Fixed())  # type: ignore[arg-type]
    return registry
