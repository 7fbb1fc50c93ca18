"""Worst-case memory of a configuration: what its bounds let each structure hold. PURE.

Every structure a caller can grow is bounded by a setting (docs/deploy.md, "Bounds and
memory"); this adds up the most each one can hold, from per-item costs measured with
tracemalloc (tests/unit/test_sizing.py fails if they drift more than 25% from these
constants). `banditd check-config` prints the estimate; `banditd serve` logs it at start and
warns when it exceeds the container's memory limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from banditd.policies.linear import OVERHEAD
from banditd.router import MAX_STACK_BYTES

MIB = 1 << 20
BASELINE_BYTES = 150 * MIB  # RSS of an idle daemon: 109-131 MiB seen (131 on its first run,
# compiling its bytecode); Python, numpy, scipy, grpcio, onnxruntime
PENDING_BYTES = 460  # one pending decision in the memory store, besides its x (8 B a dim)
BUFFERED_BYTES = 390  # one decision in the Redis store's outage buffer, besides its x
TOMBSTONE_BYTES = 190  # one ended decision remembered for DUPLICATE answers (memory store)
SEGMENT_BYTES = 500  # one segment's model record and registry entry, besides its arms
STACK_CACHE_BYTES = MAX_STACK_BYTES  # the Router's stacked-state cache, at most
FIELD_CACHE_BYTES = 8 * MIB  # the Redis store's cached script arguments (4,096 lists)
REGISTERED_CACHE_BYTES = 5 * MIB  # segments the Redis store registered lately (16,384; about
# 180 B each with short names, 310 B with 128-character ones)


@dataclass(frozen=True, slots=True)
class PolicyShape:
    """What bounds one policy's state: dim of its update vectors, arms it may hold state for
    (per segment), segments it may have (0 = no limit), how many such policies (auto-created
    ones share the template's shape)."""

    name: str
    dim: int
    arms: int
    max_segments: int
    count: int = 1


def arm_state_bytes(dim: int) -> int:
    """One arm's state: S, A⁻¹ (d² each), b, θ (d each) in float64, and the objects."""
    return 16 * dim * dim + 16 * dim + OVERHEAD


def model_bytes(policy: PolicyShape) -> int | None:
    """The most a policy's models can hold (None: no segment limit, so no bound)."""
    if not policy.max_segments:
        return None
    per_segment = SEGMENT_BYTES + policy.arms * arm_state_bytes(policy.dim)
    return policy.count * policy.max_segments * per_segment


def estimate(
    backend: str,
    policies: Sequence[PolicyShape],
    max_pending: int,
    max_tombstones: int,
    max_buffered: int,
    cache_bytes: int,
) -> dict[str, int | None]:
    """Worst-case bytes by part (None: unbounded) and their "total"."""
    dim = max((p.dim for p in policies), default=1)
    parts: dict[str, int | None] = {"baseline": BASELINE_BYTES, "route_cache": STACK_CACHE_BYTES}
    models = [model_bytes(p) for p in policies]
    all_models = None if None in models else sum(m for m in models if m is not None)
    if backend == "memory":
        parts["pending"] = max_pending * (PENDING_BYTES + 8 * dim)
        parts["tombstones"] = max_tombstones * TOMBSTONE_BYTES
        parts["models"] = all_models
    else:
        parts["outage_buffer"] = max_buffered * (BUFFERED_BYTES + 8 * dim)
        parts["model_cache"] = cache_bytes if all_models is None else min(cache_bytes, all_models)
        parts["script_args"] = FIELD_CACHE_BYTES
        parts["segment_registrations"] = REGISTERED_CACHE_BYTES
    values = list(parts.values())
    parts["total"] = None if None in values else sum(v for v in values if v is not None)
    return parts
