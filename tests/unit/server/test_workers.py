"""server.workers: how many workers (CPUs, cgroup quota), what N > 1 refuses, each worker's
settings and the spill files it takes over."""

from __future__ import annotations

from pathlib import Path

import pytest

from banditd.cli import main
from banditd.config import Settings
from banditd.errors import ConfigError
from banditd.server.cgroup import cgroup_cpu_quota, usable_cpus
from banditd.server.workers import (
    SUPERVISOR_BYTES,
    WorkerRole,
    adopted_files,
    worker_count,
    worker_settings,
)

REDIS = {"backend": "redis"}


def settings(**server: object) -> Settings:
    store = server.pop("store", REDIS)
    return Settings(server={"listen": "127.0.0.1:50051", **server}, store=store)  # type: ignore[arg-type]


def cgroup_tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc_cgroup = tmp_path / "proc-cgroup"
    proc_cgroup.write_text(proc)
    return root, proc_cgroup


@pytest.mark.parametrize(
    ("proc", "files", "cpus"),
    [
        ("0::/\n", {"cpu.max": "max 100000\n"}, None),
        ("0::/\n", {"cpu.max": "200000 100000\n"}, 2.0),
        ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),
        # on a host: the process's own cgroup and its parents; the smallest quota applies
        (
            "0::/kube/pod/c\n",
            {
                "cpu.max": "max 100000",
                "kube/cpu.max": "400000 100000",
                "kube/pod/c/cpu.max": "300000 100000",
            },
            3.0,
        ),
        (
            "0::/kube/pod/c\n",
            {"kube/cpu.max": "100000 100000", "kube/pod/c/cpu.max": "max 100000"},
            1.0,
        ),
        # cgroup v1 (this CI machine's kind): cpu.cfs_quota_us / cpu.cfs_period_us, -1 = none
        (
            "4:memory:/x\n1:cpu,cpuacct:/\n0::/\n",
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            None,
        ),
        (
            "1:cpu,cpuacct:/docker/abc\n",
            {"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            0.5,
        ),
        ("", {}, None),
    ],
)
def test_cgroup_cpu_quota_reads_v2_then_v1_along_the_path(
    tmp_path: Path, proc: str, files: dict[str, str], cpus: float | None
) -> None:
    """cpu.max ('max' = none) or cfs quota/period, the smallest on the way up to the root."""
    root, proc_cgroup = cgroup_tree(tmp_path, proc, files)
    assert cgroup_cpu_quota(root, proc_cgroup) == cpus


@pytest.mark.parametrize(
    ("affinity", "quota", "cpus"),
    [(4, None, 4), (4, 2.0, 2), (4, 1.5, 1), (2, 8.0, 2), (1, 0.25, 1), (8, 2.9999999999, 3)],
)
def test_usable_cpus_is_the_smaller_of_affinity_and_quota_rounded_down(
    affinity: int, quota: float | None, cpus: int
) -> None:
    """A 1.5-CPU quota makes 1 worker (never throttled); never fewer than 1."""
    assert usable_cpus(lambda: affinity, lambda: quota) == cpus


def test_worker_count_auto_follows_the_cpus_on_redis_and_is_1_in_memory() -> None:
    """auto = the usable CPUs; on the memory store auto is 1, not a refusal."""
    assert worker_count(settings(workers="auto"), cpus=lambda: 3, memory_bytes=lambda: None) == 3
    assert worker_count(settings(workers="auto", store={}), cpus=lambda: 3) == 1
    assert worker_count(settings(workers=2)) == 2
    assert worker_count(settings()) == 1


def test_auto_starts_no_more_workers_than_the_memory_limit_holds() -> None:
    """No CPU limit on a 16-CPU node, 512 MiB: as many workers as fit at the worst case."""
    auto = settings(workers="auto")
    each = auto.memory_estimate()["total"]
    assert each is not None
    fits = ((512 << 20) - SUPERVISOR_BYTES) // each
    assert 1 < fits < 16
    assert worker_count(auto, cpus=lambda: 16, memory_bytes=lambda: 512 << 20) == fits
    assert worker_count(auto, cpus=lambda: 16, memory_bytes=lambda: 100 << 20) == 1
    assert worker_count(settings(workers=16), memory_bytes=lambda: 100 << 20) == 16  # as told


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"workers": 2, "store": {}}, "server.workers = 2 needs store.backend = 'redis'"),
        ({"workers": 2, "listen": "127.0.0.1:0"}, "port 0 would give each of the 2 workers"),
        ({"workers": 3, "health_listen": "0.0.0.0:0"}, r"server.health_listen = '0.0.0.0:0'"),
        ({"workers": 2, "listen": "unix:/tmp/b.sock"}, "cannot share a Unix socket"),
    ],
)
def test_worker_count_refuses_what_several_workers_cannot_serve(
    server: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        worker_count(settings(**server))


def test_serve_refuses_the_memory_store_with_workers_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2 and one line on stderr, before anything starts (check-config says the same)."""
    for command in ("serve", "check-config"):
        assert main([command, "--server.workers", "2", "--server.metrics_listen", ""]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith("banditd: server.workers = 2 needs store.backend = 'redis'")


def test_workers_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match=r"server.workers must be 1..64 or 'auto'"):
        settings(workers=0)


def test_each_worker_has_its_own_trace_and_spill_file_and_no_metrics_listener() -> None:
    base = Settings(
        trace_path="/var/lib/banditd/trace.jsonl",
        server={"metrics_listen": "0.0.0.0:9464"},  # type: ignore[arg-type]
        store={"backend": "redis", "redis": {"spill_path": "/var/lib/banditd/spill.jsonl"}},  # type: ignore[arg-type]
    )
    one = worker_settings(base, WorkerRole(1, 2))
    assert one.trace_path == "/var/lib/banditd/trace.jsonl.w1"
    assert one.store.redis.spill_path == "/var/lib/banditd/spill.jsonl.w1"
    assert one.server.metrics_listen == ""
    assert one.server.listen == base.server.listen
    off = worker_settings(Settings(), WorkerRole(0, 2))
    assert (off.trace_path, off.store.redis.spill_path) == ("", "")


NAMES = ["spill", "spill.w0", "spill.w1", "spill.w2", "spill.w5", "spill.tmp", "spill.w1.tmp",
         "other", "spill.wx"]  # fmt: skip


@pytest.mark.parametrize(
    ("index", "count", "adopted"),
    [
        (0, 1, ["spill.w0", "spill.w1", "spill.w2", "spill.w5"]),  # one process takes all
        (0, 2, ["spill", "spill.w2"]),  # owns w0; the single daemon's file, and w2 (2 mod 2)
        (1, 2, ["spill.w5"]),  # owns w1; w5 (5 mod 2)
        (0, 3, ["spill"]),
        (2, 3, ["spill.w5"]),
    ],
)
def test_spill_files_another_worker_count_left_go_to_exactly_one_worker(
    index: int, count: int, adopted: list[str]
) -> None:
    got = adopted_files("/d/spill", index, count, NAMES)
    assert got == [f"/d/{name}" for name in adopted]


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_every_left_spill_file_has_one_owner_or_adopter(count: int) -> None:
    """Whatever the worker count, each file is read by exactly one process."""
    files = ["spill", *(f"spill.w{j}" for j in range(6))]
    own = ["spill"] if count == 1 else [f"spill.w{i}" for i in range(count)]
    taken = [Path(p).name for i in range(count) for p in adopted_files("/d/spill", i, count, files)]
    assert sorted(taken + own) == sorted(files)
