"""Prometheus metrics of one daemon (own registry, so tests can run several servers).

The per-RPC series (request counts, latency histogram, decisions, feedback outcomes, model
versions, degraded, the last settle's time) are counted in plain dicts by `HotStats` and turned
into Prometheus families only when /metrics is scraped. prometheus-client's Counter.inc and
Histogram.observe take a lock and check the metric's state on every call: nine such calls per
Route+Feedback cost ~10 µs, about 7% of the in-process handler (docs/bench.md). Everything off
the hot path stays an ordinary prometheus-client metric.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from banditd import __version__

# Outcomes that settle a decision in the store: a reward or an expiry rule was applied.
_SETTLED = frozenset({"applied", "defaulted", "dropped"})

LATENCY_BUCKETS_S = (
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class HotStats(Collector):
    """Counters the RPC handlers bump on every call, exported at scrape time.

    Only the event loop's thread writes them. A scrape (prometheus-client's HTTP thread) reads
    `sorted(d.items())`, which CPython builds without releasing the GIL, so it never sees a dict
    mid-resize; a latency row may be one observation ahead of its count, which a scrape
    tolerates.
    """

    def __init__(self) -> None:
        # (rpc, code) -> [count, sum_s, n_0, ..., n_B]: n_i observations in bucket i (the last
        # is +Inf), not yet cumulative.
        self.rpcs: dict[tuple[str, str], list[float]] = {}
        self.decisions: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.degraded = 0
        self.last_settle_s = 0.0  # unix time of the last settle (feedback or expiry); 0 = none

    def rpc(self, rpc: str, code: str, elapsed_s: float) -> None:
        row = self.rpcs.get((rpc, code))
        if row is None:
            row = self.rpcs[(rpc, code)] = [0.0] * (len(LATENCY_BUCKETS_S) + 3)
        row[0] += 1
        row[1] += elapsed_s
        row[2 + bisect.bisect_left(LATENCY_BUCKETS_S, elapsed_s)] += 1  # le is inclusive

    def decided(self, policy: str, version: int, degraded: bool) -> None:
        self.decisions[policy] = self.decisions.get(policy, 0) + 1
        self.versions[policy] = version
        self.degraded = 1 if degraded else 0

    def outcome(self, outcome: str) -> None:
        """Count how a decision ended; a settle (not a duplicate or refusal) stamps the time."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome in _SETTLED:
            self.last_settle_s = time.time()

    def answered(self) -> int:
        """RPCs answered so far (any method, any code); read by the drain on SIGTERM."""
        return int(sum(row[0] for row in list(self.rpcs.values())))

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "banditd_rpc_requests", "RPCs by method and gRPC status code", labels=["rpc", "code"]
        )
        latency = HistogramMetricFamily(
            "banditd_rpc_latency_seconds", "RPC handler latency by method and gRPC status code",
            labels=["rpc", "code"],
        )  # fmt: skip
        for (rpc, code), row in sorted(self.rpcs.items()):
            row = list(row)
            requests.add_metric([rpc, code], row[0])
            buckets, running = [], 0.0
            for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), row[2:], strict=True):
                running += n
                buckets.append((_bound(bound), running))
            latency.add_metric([rpc, code], buckets, row[1])
        yield requests
        yield latency
        yield _family(CounterMetricFamily, "banditd_decisions", "Route decisions by policy",
                      "policy", self.decisions)  # fmt: skip
        yield _family(
            CounterMetricFamily, "banditd_feedback_outcomes",
            "How decisions ended: applied, duplicate, expired, unknown, defaulted, dropped",
            "outcome", self.outcomes,
        )  # fmt: skip
        yield _family(GaugeMetricFamily, "banditd_model_version",
                      "Latest model version seen per policy", "policy", self.versions)  # fmt: skip
        yield GaugeMetricFamily(
            "banditd_degraded", "1 while Route answers from a cached model", value=self.degraded
        )
        yield GaugeMetricFamily(
            "banditd_last_settle_timestamp_seconds",
            "Unix time of the last decision settled by feedback or expiry (0 = none yet)",
            value=self.last_settle_s,
        )


# (metric name without _total, help, label name or None, value or per-label values)
Count = tuple[str, str, str | None, int | dict[str, int]]


class Counts(Collector):
    """Cumulative counts other objects keep as plain ints (router, stores), read at scrape time:
    nothing on the hot path, and no copy to keep in step. `read` runs in the scrape thread; it
    only reads ints and small dicts, as HotStats.collect does."""

    def __init__(self, read: Callable[[], Iterable[Count]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        for name, documentation, label, value in self._read():
            if isinstance(value, dict):
                yield _family(CounterMetricFamily, name, documentation, label or "key", value)
            else:
                yield CounterMetricFamily(name, documentation, value=value)


def serve_metrics(
    listen: str, registry: CollectorRegistry, cert_file: str | None, key_file: str | None
) -> WSGIServer | None:
    """/metrics of `registry` on `listen` (host:port; TLS with both files) in a daemon thread,
    or None when `listen` is ''."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    http_server, _thread = start_http_server(
        int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry, certfile=cert_file,
        keyfile=key_file,
    )  # fmt: skip
    return http_server


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: dict[str, int],
) -> Metric:
    family = kind(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        # What prometheus_client's default registry has and ours (one per daemon) would not:
        # process_* (resident/virtual memory, CPU seconds, open and max fds, start time; read
        # from /proc at scrape time), python_gc_* (collections per generation: gen 2 pauses
        # show in the latency tail) and python_info.
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=r)
        self.hot = HotStats()
        r.register(self.hot)
        self.pending = Gauge(
            "banditd_pending_decisions", "Decisions waiting for their reward", registry=r
        )
        self.rpc_failures = Counter(
            "banditd_rpc_failures",
            "RPCs answered INTERNAL: an unexpected exception in a handler, a bug in banditd"
            " (logged as rpc.failed)",
            ["rpc"],
            registry=r,
        )
        self.admin_calls = Counter(
            "banditd_admin_calls",
            "Admin RPCs by method and status (each also logged as admin.audit: who, what, which"
            " policy)",
            ["rpc", "code"],
            registry=r,
        )
        self.store_errors = Counter(
            "banditd_store_errors", "Errors talking to the state store", registry=r
        )
        # -- deploy section (issue #7): caches and serving state ----------------------------
        # LoRA adapter cache (cache/pager.py): a Route to a resident adapter is a hit.
        self.adapter_cache_hits = Counter(
            "banditd_adapter_cache_hits", "Routes whose chosen adapter was resident", registry=r
        )
        self.adapter_cache_misses = Counter(
            "banditd_adapter_cache_misses", "Routes whose chosen adapter had to be paged in",
            registry=r,
        )  # fmt: skip
        self.adapter_cache_loads = Counter(
            "banditd_adapter_cache_loads",
            "Load directives issued by the cache controller",
            registry=r,
        )
        self.adapter_cache_evictions = Counter(
            "banditd_adapter_cache_evictions", "Evict directives issued by the cache controller",
            registry=r,
        )  # fmt: skip
        # ONNX feature cache (features/): repeated contexts skip the encoder.
        self.feature_cache_hits = Counter(
            "banditd_feature_cache_hits", "Context encodings served from the feature cache",
            registry=r,
        )  # fmt: skip
        self.feature_cache_misses = Counter(
            "banditd_feature_cache_misses", "Context encodings not found in the feature cache",
            registry=r,
        )  # fmt: skip
        self.serving = Gauge(
            "banditd_serving", "1 while readiness (health banditd.v1.Router) is SERVING",
            registry=r,
        )  # fmt: skip
        self.build_info = Gauge(
            "banditd_build_info", "Always 1; the running version is a label", ["version"],
            registry=r,
        )  # fmt: skip
        self.build_info.labels(__version__).set(1)
        # --- redis store (docs/redis.md) ---
        self.decisions_unrecorded = Counter(
            "banditd_decisions_unrecorded",
            "Decisions lost while the store was down (outage buffer full): never joinable",
            registry=r,
        )
        self.pending_lost = Counter(
            "banditd_pending_lost",
            "Pending decisions that expired from the store before any replica settled them",
            registry=r,
        )
        self.store_busy = Counter(
            "banditd_store_busy",
            "Redis calls refused because every pooled connection stayed in use for timeout_s"
            " (raise store.redis.max_connections)",
            registry=r,
        )
        self.store_up = Gauge(
            "banditd_store_up",
            "1 while the state store takes updates (Redis answers its ping; always 1 in memory)",
            registry=r,
        )
        self.outage_buffered = Gauge(
            "banditd_outage_buffered", "Decisions buffered locally until the store answers",
            registry=r,
        )  # fmt: skip
