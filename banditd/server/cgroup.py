"""What the container lets this process use, read from its cgroup: CPUs and memory.

Inside a container the cgroup files at /sys/fs/cgroup are the container's own (cgroup
namespace); on a host they are looked up along the process's path in /proc/self/cgroup, and
the smallest limit on the way to the root applies. cgroup v2 first, then v1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPUs this process's cgroup quota allows (the smallest along its path to the root:
    cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us / cpu.cfs_period_us`), None without one."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    unified, v1 = None, None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            unified = path
        elif "cpu" in controllers.split(","):
            v1 = (controllers, path)
    limits: list[float] = []
    if unified is not None:
        for directory in _ancestors(root, unified):
            fields = _read(directory / "cpu.max").split()
            if len(fields) == 2 and fields[0] != "max":
                limits.append(_ratio(fields[0], fields[1]))
    if not limits and v1 is not None:
        for directory in _ancestors(root / v1[0], v1[1]):
            quota = _read(directory / "cpu.cfs_quota_us")
            period = _read(directory / "cpu.cfs_period_us")
            if quota and period and not quota.startswith("-"):
                limits.append(_ratio(quota, period))
    limits = [v for v in limits if v > 0]
    return min(limits) if limits else None


def _ancestors(root: Path, cgroup: str) -> Iterable[Path]:
    """root/cgroup, its parents, ..., root (a container often sees only root: its own)."""
    parts = [p for p in cgroup.split("/") if p and p != ".."]
    for n in range(len(parts), -1, -1):
        yield root.joinpath(*parts[:n])


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _ratio(quota: str, period: str) -> float:
    try:
        return int(quota) / int(period) if int(period) > 0 else 0.0
    except ValueError:
        return 0.0


def usable_cpus(
    affinity: Callable[[], int] | None = None, quota: Callable[[], float | None] = cgroup_cpu_quota
) -> int:
    """CPUs this process may use: its affinity mask and its cgroup quota (rounded down: a
    1.5-CPU quota is 1 CPU of workers that are never throttled), whichever is smaller; >= 1."""
    cpus = affinity() if affinity is not None else _affinity()
    limit = quota()
    if limit is not None:
        cpus = min(cpus, math.floor(limit + 1e-9))
    return max(1, cpus)


def _affinity() -> int:
    getter = getattr(os, "sched_getaffinity", None)
    return len(getter(0)) if getter is not None else os.cpu_count() or 1


def memory_limit() -> int | None:
    """The cgroup's memory limit in bytes (v2, then v1), or None if there is none to read."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # v1 reports "no limit" as a huge number
            return int(raw)
    return None
