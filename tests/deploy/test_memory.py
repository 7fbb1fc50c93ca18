"""The shipped pod's memory limit fits what the shipped config's bounds allow (sizing.py).

Before the bounds, the memory store's defaults alone (1,000,000 pending decisions at ~0.5 kB,
1,000,000 tombstones) went past the sidecar's 512 Mi limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from banditd import sizing
from banditd.config import load_settings
from banditd.server.cgroup import usable_cpus
from banditd.server.workers import worker_count
from tests.deploy.conftest import (
    CONFIG_TOML,
    CONFIGS,
    OVERLAYS,
    ROOT,
    free_listeners,
    render,
    sidecar,
)
from tests.integration.conftest import free_port

UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def limit_bytes(overlay: str) -> int:
    value = str(sidecar(render(overlay))["resources"]["limits"]["memory"])
    return int(value[:-2]) * UNITS[value[-2:]]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_worst_case_of_the_shipped_config_fits_the_pod_limit(overlay: str, backend: str) -> None:
    """Every bounded structure full at once, on either store, stays under the sidecar's limit
    (with 10% to spare for the allocator)."""
    settings = load_settings(CONFIGS[overlay], ["--store.backend", backend])
    total = settings.memory_estimate()["total"]
    assert total is not None, "some structure is unbounded"
    assert total * 1.1 <= limit_bytes(overlay), (total >> 20, limit_bytes(overlay) >> 20)


def test_the_old_memory_defaults_would_not_have_fitted() -> None:
    """The estimate is not trivially small: the wave-1 defaults exceed 512 Mi."""
    settings = load_settings(
        CONFIG_TOML,
        ["--store.backend", "memory", "--store.max_pending", "1000000",
         "--store.max_tombstones", "1000000"],
    )  # fmt: skip
    total = settings.memory_estimate()["total"]
    assert total is not None
    assert total > 512 << 20


def test_an_idle_daemon_uses_no_more_than_the_baseline(tmp_path: Path) -> None:
    """sizing.BASELINE_BYTES covers the RSS of a started daemon before any traffic."""
    config = tmp_path / "banditd.toml"
    config.write_text(
        '[server]\nmetrics_listen = ""\n'
        '[policies.chat]\narms = ["a", "b"]\nfeatures.numeric = ["x1"]\n'
    )
    listeners = free_listeners(free_port)  # no fixed port (Admin's default is 127.0.0.1:50053)
    del listeners["BANDITD_SERVER__METRICS_LISTEN"]  # off, as before
    proc = subprocess.Popen(
        [sys.executable, "-m", "banditd", "serve", "--config", str(config)],
        cwd=ROOT, env={**os.environ, **listeners, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # wait for the daemon to say it serves
            if "server.started" in line or time.monotonic() > deadline:
                break
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # drains and closes the pipe
    assert rss_kb * 1024 <= sizing.BASELINE_BYTES, rss_kb


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_auto_workers_follow_the_sidecar_limits(overlay: str) -> None:
    """workers = "auto": the sidecar's CPU limit of 1 makes one process (no supervisor); at
    2 CPUs its 512 Mi still holds 2 workers and the supervisor at the worst case, not 3."""
    settings = load_settings(CONFIGS[overlay])
    assert settings.server.workers == "auto"
    limits = sidecar(render(overlay))["resources"]["limits"]
    assert str(limits["cpu"]) == "1"
    memory = limit_bytes(overlay)
    assert worker_count(settings, lambda: usable_cpus(lambda: 8, lambda: 1.0), lambda: memory) == 1
    assert worker_count(settings, lambda: 2, lambda: memory) == 2
    assert worker_count(settings, lambda: 3, lambda: memory) == 2
