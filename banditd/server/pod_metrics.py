"""One /metrics for the pod from N worker processes: each worker's scrape, merged.

Why not prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR): it aggregates only
metrics whose every `inc` writes an mmap'd file, and the per-RPC series are deliberately not
such metrics (metrics.py `HotStats`: plain dicts turned into families at scrape time, because
locked `inc`/`observe` cost ~10 µs per round trip); neither are the counts the router and the
stores keep (`Counts`). So the supervisor asks each worker for its ordinary exposition over a
pipe (workers.py `answer_scrapes`) when it is scraped, and merges the families here:

- counters and histograms: summed over the workers; a worker that died keeps counting in the
  sum with what its last scrape showed (`retire`), so the pod's counters never go backwards
  when a worker is restarted (counts it made after that scrape are lost with it);
- gauges: by `GAUGES` (a sum for sizes, the max for versions and times, the min for
  "everything is up"); `*_created` (a counter's creation time): the min;
- `process_*` and `python_*` (memory, CPU, fds, GC of one process): not merged; each worker's
  series gain the label worker="<i>", and the supervisor's own worker="supervisor".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

WORKER_LABEL = "worker"
PER_PROCESS = ("process_", "python_")
SUMMED = frozenset({"counter", "histogram", "summary"})

# How a gauge of the workers becomes the pod's. A gauge not listed is summed: a test
# (tests/unit/server/test_pod_metrics.py) makes each one the daemon exports listed.
GAUGES: Mapping[str, str] = {
    "banditd_pending_decisions": "sum",
    "banditd_outage_buffered": "sum",
    "banditd_model_version": "max",
    "banditd_last_settle_timestamp_seconds": "max",
    "banditd_degraded": "max",  # 1 if any worker routes from a cached model
    "banditd_build_info": "max",
    "banditd_serving": "min",  # 1 only while every worker is ready
    "banditd_store_up": "min",  # 1 only while every worker reaches Redis
}
_FOLD: Mapping[str, Callable[[list[float]], float]] = {"sum": sum, "max": max, "min": min}

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]  # (sample name, labels)


def parse(text: str) -> list[Metric]:
    """The families of one exposition text (prometheus' text format 0.0.4)."""
    return list(text_string_to_metric_families(text))


def rule(name: str, kind: str) -> str:
    """How family `name` of type `kind` is merged: 'sum', 'max' or 'min' over the workers, or
    'worker' for a per-process family (each worker's series labelled, not merged)."""
    if name.startswith(PER_PROCESS):
        return "worker"
    if kind in SUMMED:
        return "sum"
    if name.endswith("_created"):
        return "min"
    return GAUGES.get(name, "sum")


@dataclass
class _Family:
    name: str
    documentation: str
    type: str
    samples: dict[Key, list[float]] = field(default_factory=dict)


@dataclass
class Retired:
    """What dead workers counted, kept so that the pod's counters stay monotonic."""

    families: dict[str, _Family] = field(default_factory=dict)

    def retire(self, families: Iterable[Metric]) -> None:
        for family in families:
            if family.type not in SUMMED or rule(family.name, family.type) != "sum":
                continue
            kept = self.families.setdefault(
                family.name, _Family(family.name, family.documentation, family.type)
            )
            for s in family.samples:
                key = (s.name, _labels(s.labels))
                kept.samples[key] = [sum(kept.samples.get(key, [])) + s.value]


def merge(
    workers: Mapping[str, Iterable[Metric]], retired: Retired | None = None
) -> Iterator[Metric]:
    """The pod's families from each worker's (keyed by its label value: "0", "1", ...,
    "supervisor") plus what retired workers counted."""
    merged: dict[str, _Family] = {}
    order: list[str] = []

    def family_of(m: Metric | _Family) -> _Family:
        if m.name not in merged:
            merged[m.name] = _Family(m.name, m.documentation, m.type)
            order.append(m.name)
        return merged[m.name]

    for worker, families in workers.items():
        for family in families:
            target = family_of(family)
            per_process = rule(family.name, family.type) == "worker"
            for s in family.samples:
                labels = {**s.labels, WORKER_LABEL: worker} if per_process else s.labels
                target.samples.setdefault((s.name, _labels(labels)), []).append(s.value)
    for dead in retired.families.values() if retired else ():
        target = family_of(dead)
        for key, values in dead.samples.items():
            target.samples.setdefault(key, []).extend(values)
    for name in order:
        f = merged[name]
        how = rule(f.name, f.type)
        fold = _FOLD["sum" if how == "worker" else how]  # per process: one value per series
        out = Metric(f.name, f.documentation, f.type)
        for (sample, pairs), values in f.samples.items():
            out.add_sample(sample, dict(pairs), float(fold(values)))
        yield out


def rpcs_answered(families: Iterable[Metric]) -> float:
    """RPCs a worker answered (all of banditd_rpc_requests_total): its share of the traffic."""
    return sum(
        s.value
        for f in families
        if f.name == "banditd_rpc_requests"
        for s in f.samples
        if s.name == "banditd_rpc_requests_total"
    )


def _labels(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))
