"""Prometheus metrics of one daemon (own registry, so tests can run several servers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from banditd import __version__

_LATENCY_BUCKETS_S = (
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "banditd_rpc_requests", "RPCs by method and gRPC status code", ["rpc", "code"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "banditd_rpc_latency_seconds", "RPC handler latency by method and gRPC status code",
            ["rpc", "code"],
            buckets=_LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.decisions = Counter(
            "banditd_decisions", "Route decisions by policy", ["policy"], registry=r
        )
        self.feedback = Counter(
            "banditd_feedback_outcomes",
            "How decisions ended: applied, duplicate, expired, unknown, defaulted, dropped",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.pending = Gauge(
            "banditd_pending_decisions", "Decisions waiting for their reward", registry=r
        )
        self.model_version = Gauge(
            "banditd_model_version", "Latest model version seen per policy", ["policy"],
            registry=r,
        )  # fmt: skip
        self.degraded = Gauge(
            "banditd_degraded", "1 while Route answers from a cached model", registry=r
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
            "banditd_serving", "1 while gRPC health says SERVING; 0 while draining", registry=r
        )
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
        self.outage_buffered = Gauge(
            "banditd_outage_buffered", "Decisions buffered locally until the store answers",
            registry=r,
        )  # fmt: skip
