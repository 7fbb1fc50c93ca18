"""What the numbers were measured on: CPUs, load, versions, pinning, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.launcher import CHILD_ENV, ROOT, pinning_available

PACKAGES = ("grpcio", "protobuf", "numpy", "scipy", "mabwiser", "vowpalwabbit", "redis", "hiredis")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def info() -> dict[str, object]:
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {p: _version(p) for p in PACKAGES},
        "pinning": "taskset: servers CPU0, clients CPU1" if pinning_available() else "none",
        "child_env": CHILD_ENV,
        "load_average_at_start": load_average(),
        "commit": _commit(),
    }


def show(machine: dict[str, object]) -> None:
    versions = machine["versions"]
    assert isinstance(versions, dict)
    print("== machine ==")
    print(f"  nproc {machine['nproc']} ({machine['cpu_model']}), {machine['platform']}")
    print(f"  python {machine['python']}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"  pinning: {machine['pinning']}; child processes get {machine['child_env']}")
    print(f"  load average at start: {machine['load_average_at_start']} (1/5/15 min)")
    print(f"  tree: {machine['commit']}")
    print(flush=True)
