"""The trace writer: private files, rotation by size and age, and what each trace_context keeps."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from banditd.sim.traces import (
    JsonlTraceWriter,
    RedactedTraceError,
    TraceOptions,
    logged_rows,
    read_trace,
)

T0 = 1_000_000_000.0  # the injected clock's start (2001): every age below is relative to it


class Clock:
    """A clock the test moves; mtimes are set with os.utime on the same scale."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def decision(n: int, **extra: object) -> dict[str, object]:
    """A decision record as router._decision_record writes it (two numeric features, one
    categorical, two candidates with one arm feature each)."""
    return {
        "type": "decision", "t": T0 + n, "decision_id": f"chat:{n:024x}", "policy": "chat",
        "segment": "", "arm": "a", "propensity": 0.75, "model_version": n, "deadline": T0 + 60,
        "x": [1.0, 0.25, -1.5, 1.0, 0.0],
        "context": {"features": {"x1": 0.25, "x2": -1.5},
                    "categorical": {"country": "de", "tier": "gold"}},
        "candidates": [{"id": "a", "features": [0.5], "cost": 1.0, "expected_latency_ms": 20.0},
                       {"id": "b", "features": [2.5], "cost": 0.5, "expected_latency_ms": 40.0}],
        "scores": [0.9, 0.4], "propensities": [0.75, 0.25],
    } | extra  # fmt: skip


def outcome(n: int) -> dict[str, object]:
    return {
        "type": "outcome", "t": T0 + n + 0.5, "decision_id": f"chat:{n:024x}",
        "outcome": "applied", "arm": "a", "reward": 1.0, "reported": 1.0, "model_version": n,
    }  # fmt: skip


def strict_lines(path: Path) -> list[dict[str, object]]:
    """Every line of `path` parsed as strict JSON (a NaN/Infinity token fails)."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.fixture
def umask_0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_trace_file_is_0600_and_its_new_directory_0700_even_with_umask_0(
    tmp_path: Path, umask_0: None
) -> None:
    """With umask 0 a plain open() would make the trace 0666: it must stay private."""
    path = tmp_path / "var" / "trace" / "trace.jsonl"
    writer = JsonlTraceWriter(path)
    writer.write(decision(1))
    writer.close()
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_an_existing_trace_file_is_tightened_to_0600(tmp_path: Path, umask_0: None) -> None:
    """A trace an older banditd left world-readable is made private when appended to."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    path = shared / "trace.jsonl"
    path.write_text(json.dumps(decision(0)) + "\n")
    path.chmod(0o644)
    JsonlTraceWriter(path).close()
    assert mode(path) == 0o600
    assert mode(shared) == 0o755  # an existing directory is left as it is


def test_rotation_at_the_size_bound_keeps_keep_files_and_deletes_older(tmp_path: Path) -> None:
    """Each file stays under max_bytes; .1 is the newest; beyond keep_files the oldest goes."""
    path = tmp_path / "trace.jsonl"
    line_bytes = len(json.dumps(decision(10), separators=(",", ":"))) + 1
    options = TraceOptions(max_bytes=3 * line_bytes, keep_files=2)
    writer = JsonlTraceWriter(path, options, clock=Clock())
    for n in range(10, 20):  # 10 equal-size records: files of 3, 3, 3 and 1
        writer.write(decision(n))
    writer.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["trace.jsonl", "trace.jsonl.1", "trace.jsonl.2"]
    assert all(p.stat().st_size <= options.max_bytes for p in tmp_path.iterdir())
    oldest_first = [path.with_name("trace.jsonl.2"), path.with_name("trace.jsonl.1"), path]
    ids = [r["decision_id"] for p in oldest_first for r in read_trace(p)]
    assert ids == [f"chat:{n:024x}" for n in range(13, 20)]  # 10..12 were in the deleted .3


def test_keep_files_0_deletes_the_trace_on_rotation(tmp_path: Path) -> None:
    """keep_files = 0: a full file is deleted, not renamed; only the current one exists."""
    path = tmp_path / "trace.jsonl"
    line_bytes = len(json.dumps(decision(10), separators=(",", ":"))) + 1
    writer = JsonlTraceWriter(path, TraceOptions(max_bytes=2 * line_bytes), clock=Clock())
    for n in range(10, 15):
        writer.write(decision(n))
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["trace.jsonl"]
    assert [r["model_version"] for r in read_trace(path)] == [14]


def test_a_record_larger_than_max_bytes_is_written_whole(tmp_path: Path) -> None:
    """The size bound rotates before a write, it never splits or drops a record."""
    path = tmp_path / "trace.jsonl"
    writer = JsonlTraceWriter(path, TraceOptions(max_bytes=64, keep_files=1), clock=Clock())
    writer.write(decision(1))
    writer.write(decision(2))
    writer.close()
    assert [r["model_version"] for r in read_trace(path.with_name("trace.jsonl.1"))] == [1]
    assert [r["model_version"] for r in read_trace(path)] == [2]


def test_rotated_files_older_than_max_age_are_deleted_on_flush(tmp_path: Path) -> None:
    """Age is the rotated file's mtime (its last record); the check needs no sleeping."""
    path = tmp_path / "trace.jsonl"
    line_bytes = len(json.dumps(decision(10), separators=(",", ":"))) + 1
    clock = Clock()
    options = TraceOptions(max_bytes=line_bytes, keep_files=3, max_age_s=1000.0)
    writer = JsonlTraceWriter(path, options, clock=clock)
    for n in range(4):  # the current file and .1 .. .3, one record each
        writer.write(decision(n))
    writer.flush()
    for index, last_written in ((3, T0 - 2000), (2, T0 - 1000), (1, T0 - 999)):
        os.utime(path.with_name(f"trace.jsonl.{index}"), (last_written, last_written))
    writer.flush()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["trace.jsonl", "trace.jsonl.1"]  # .2 is exactly max_age_s old: gone
    clock.t = T0 + 1  # .1 reaches the limit too
    writer.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.jsonl"]
    writer.close()


def test_current_file_is_rotated_once_its_first_record_is_max_age_old(tmp_path: Path) -> None:
    """A quiet daemon never reaches max_bytes; its file still leaves after max_age_s."""
    path = tmp_path / "trace.jsonl"
    clock = Clock()
    writer = JsonlTraceWriter(path, TraceOptions(keep_files=2, max_age_s=1000.0), clock=clock)
    writer.write(decision(1))
    clock.t = T0 + 999
    writer.write(decision(2))
    clock.t = T0 + 1000
    writer.write(decision(3))  # the first record is 1000 s old: rotate first
    clock.t = T0 + 1500
    writer.flush()  # the new file's first record is 500 s old: stays
    writer.close()
    assert [r["model_version"] for r in read_trace(path.with_name("trace.jsonl.1"))] == [1, 2]
    assert [r["model_version"] for r in read_trace(path)] == [3]


def test_an_appended_trace_ages_from_its_first_record(tmp_path: Path) -> None:
    """After a restart the current file's age is its first record's t, not the start time."""
    path = tmp_path / "trace.jsonl"
    path.write_text(json.dumps(decision(0)) + "\n")  # t = T0
    clock = Clock(T0 + 1000)
    writer = JsonlTraceWriter(path, TraceOptions(keep_files=1, max_age_s=1000.0), clock=clock)
    writer.write(decision(5))
    writer.close()
    assert [r["model_version"] for r in read_trace(path.with_name("trace.jsonl.1"))] == [0]
    assert [r["model_version"] for r in read_trace(path)] == [5]


def test_rotated_files_beyond_keep_files_are_deleted_at_start(tmp_path: Path) -> None:
    """Lowering keep_files takes effect on the next start; unrelated files are left alone."""
    path = tmp_path / "trace.jsonl"
    for name in ("trace.jsonl.1", "trace.jsonl.2", "trace.jsonl.3", "trace.jsonl.01", "other.1"):
        (tmp_path / name).write_text("")
    JsonlTraceWriter(path, TraceOptions(keep_files=1)).close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["other.1", "trace.jsonl", "trace.jsonl.01", "trace.jsonl.1"]


def test_full_context_writes_the_record_as_given(tmp_path: Path) -> None:
    """trace_context = "full" (the default) adds and removes nothing."""
    path = tmp_path / "trace.jsonl"
    writer = JsonlTraceWriter(path)
    writer.write(decision(1))
    writer.write(outcome(1))
    writer.close()
    assert strict_lines(path) == [decision(1), outcome(1)]


def test_hash_context_keeps_names_and_x_but_no_raw_values(tmp_path: Path) -> None:
    """hash: strings become keyed digests, numbers null; x, scores and outcomes stay."""
    path = tmp_path / "trace.jsonl"
    writer = JsonlTraceWriter(path, TraceOptions(context="hash"), hash_key=b"k" * 32)
    writer.write(decision(1))
    writer.write(decision(2, context={"features": {"x1": 0.25},
                                      "categorical": {"country": "fr", "tier": "de"}}))  # fmt: skip
    writer.write(outcome(1))
    writer.close()
    first, second, settled = strict_lines(path)
    assert first["redacted"] == "hash"
    context = first["context"]
    assert isinstance(context, dict)
    assert context["features"] == {"x1": None, "x2": None}
    country, tier = context["categorical"]["country"], context["categorical"]["tier"]
    assert re.fullmatch("h:[0-9a-f]{16}", country)
    assert second["context"]["categorical"]["country"] != country  # de != fr
    assert second["context"]["categorical"]["tier"] != country  # same value, other name
    assert first["candidates"] == [
        {"id": "a", "features": [None], "cost": 1.0, "expected_latency_ms": 20.0},
        {"id": "b", "features": [None], "cost": 0.5, "expected_latency_ms": 40.0},
    ]
    kept = ("x", "scores", "propensities", "arm", "propensity", "segment", "decision_id")
    assert {k: first[k] for k in kept} == {k: decision(1)[k] for k in kept}
    assert settled == outcome(1)
    text = path.read_text()
    assert not re.search('"(de|fr|gold)"', text)

    again = JsonlTraceWriter(tmp_path / "again.jsonl", TraceOptions(context="hash"),
                             hash_key=b"k" * 32)  # fmt: skip
    again.write(decision(1))
    again.close()
    assert strict_lines(tmp_path / "again.jsonl")[0]["context"] == context  # same key, same hash
    other = JsonlTraceWriter(tmp_path / "other.jsonl", TraceOptions(context="hash"))
    other.write(decision(1))
    other.close()
    assert strict_lines(tmp_path / "other.jsonl")[0]["context"]["categorical"]["tier"] != tier


def test_a_hash_trace_still_gives_logged_rows(tmp_path: Path) -> None:
    """OPE reads x, arm, propensity and reward: all of them survive hashing."""
    full, hashed = tmp_path / "full.jsonl", tmp_path / "hash.jsonl"
    for path, context in ((full, "full"), (hashed, "hash")):
        writer = JsonlTraceWriter(path, TraceOptions(context=context))
        for n in range(3):
            writer.write(decision(n))
            writer.write(outcome(n))
        writer.close()
    assert len(list(read_trace(hashed))) == 6
    assert logged_rows(hashed, "chat") == logged_rows(full, "chat")
    assert logged_rows(hashed, "chat")[1][0] == ([1.0, 0.25, -1.5, 1.0, 0.0], 0, 1.0, 0.75)


def test_drop_context_removes_context_x_scores_and_candidate_features(tmp_path: Path) -> None:
    """drop: what is left is who got which arm with which propensity, and the reward."""
    path = tmp_path / "trace.jsonl"
    writer = JsonlTraceWriter(path, TraceOptions(context="drop"))
    writer.write(decision(1))
    writer.write(outcome(1))
    writer.close()
    dropped, settled = strict_lines(path)
    gone = {"context", "x", "scores"}
    assert dropped == {k: v for k, v in decision(1).items() if k not in gone} | {
        "redacted": "drop",
        "candidates": [{"id": "a", "cost": 1.0, "expected_latency_ms": 20.0},
                       {"id": "b", "cost": 0.5, "expected_latency_ms": 40.0}],
    }  # fmt: skip
    assert settled == outcome(1)
    assert [r["type"] for r in read_trace(path)] == ["decision", "outcome"]
    with pytest.raises(RedactedTraceError, match="no x"):
        logged_rows(path, "chat")


def test_trace_options_refuse_negative_bounds_and_unknown_modes() -> None:
    """The writer's own parameters are checked at construction, like the settings."""
    with pytest.raises(ValueError, match="max_bytes"):
        TraceOptions(max_bytes=-1)
    with pytest.raises(ValueError, match="max_bytes"):
        TraceOptions(max_age_s=float("nan"))
    with pytest.raises(ValueError, match="context"):
        TraceOptions(context="sha")


def test_worker_files_are_read_as_one_trace_in_time_order(tmp_path: Path) -> None:
    """server.workers > 1 writes <trace_path>.w<i>; reading trace_path merges them by time, so
    a reward that reached worker 1 joins its decision from worker 0 (rotated files stay out).
    A duplicate's record before the applied one, or an outcome before its decision (a file is
    in write order, a decision's t is its Route's start), do not lose the join."""
    path = tmp_path / "trace.jsonl"
    duplicate = outcome(2) | {"t": T0 + 2.2, "outcome": "duplicate", "reward": None}
    files = {"trace.jsonl.w0": [decision(0), decision(2), duplicate, outcome(3), decision(6),
                                decision(5)],
             "trace.jsonl.w1": [outcome(0), decision(1), outcome(1), outcome(2), decision(3),
                                outcome(5)],
             "trace.jsonl.w0.1": [decision(9)], "trace.jsonl.1": [decision(8)]}  # fmt: skip
    for name, records in files.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    records = list(read_trace(path))
    assert len(records) == 12
    assert [r["t"] for r in records[:9]] == sorted(r["t"] for r in records[:9])
    _, rows = logged_rows(path, "chat")
    assert len(rows) == 5  # decisions 0, 1, 2, 3 and 5 (without the fix: 3)
    path.write_text(json.dumps(decision(4)) + "\n")  # a run with one process wrote it too
    assert len(list(read_trace(path))) == 13
    assert len(list(read_trace(tmp_path / "trace.jsonl.w1"))) == 6  # one worker's file alone
