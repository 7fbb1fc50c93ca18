"""Decision/outcome traces: the JSONL schema the daemon writes and the simulator replays.

One JSON object per line, in the order events happened:

``{"type": "decision", "t", "decision_id", "policy", "segment", "arm", "propensity",
"model_version", "deadline", "x", "context": {"features", "categorical"},
"candidates": [{"id", "features", "cost", "expected_latency_ms"}], "scores", "propensities"}``

- ``t``/``deadline``: Unix seconds; ``x``: the policy's context vector (before arm features);
  ``propensities``: per candidate, in candidate order; ``scores``: estimate + bonus − penalty.

``{"type": "outcome", "t", "decision_id", "outcome", "arm", "reward", "reported",
"model_version"}``

- ``outcome``: applied | duplicate | expired | defaulted | dropped; ``reward``: what the model
  learned (null if nothing); ``reported``: what the feedback carried (null for expiry).

What a decision record keeps of the request (`TraceOptions.context`, setting
``trace_context``; outcome records are the same in every mode):

- ``full``: everything above. Replay reproduces the decisions; OPE reads ``x``.
- ``hash``: the record gains ``"redacted": "hash"``. Under ``context``, names are kept, every
  string value becomes ``"h:"`` + 16 hex digits of HMAC-SHA256(key, name NUL value) and every
  number becomes null; each candidate's ``features`` become nulls (same length). ``x`` and
  ``scores`` stay, so OPE still works, but replay does not (it needs the raw context). The key
  is random per writer and never written: equal values of one name hash equal within one run.
- ``drop``: the record gains ``"redacted": "drop"`` and loses ``context``, ``x``, ``scores``
  and the candidates' ``features``: who got which arm with which propensity, and the reward.
  Neither replay nor contextual OPE is possible.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

TraceContext = Literal["full", "hash", "drop"]
SETTLING = frozenset({"applied", "defaulted", "dropped"})  # outcomes that end a decision


class RedactedTraceError(ValueError):
    """The trace was written without what this reader needs (trace_context hash or drop)."""


@dataclass(frozen=True, slots=True)
class TraceOptions:
    """How much trace a writer keeps, and how much of each request.

    max_bytes: rotate before the current file would exceed it (0 = never);
    keep_files: rotated files kept, <path>.1 (newest) .. <path>.N; 0 = deleted on rotation;
    max_age_s: rotated files last written longer ago are deleted, and the current file is
    rotated once its first record is this old (0 = no age limit); context: see the module doc.
    """

    max_bytes: int = 0
    keep_files: int = 0
    max_age_s: float = 0.0
    context: TraceContext = "full"

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.keep_files < 0 or not self.max_age_s >= 0:
            raise ValueError(f"need max_bytes, keep_files, max_age_s >= 0, got {self}")
        if self.context not in ("full", "hash", "drop"):
            raise ValueError(f"context must be full, hash or drop, got {self.context!r}")


class JsonlTraceWriter:
    """TraceSink appending JSON lines to a file; buffered, flushed by `flush`/`close`.

    The file is created 0600 (its directory 0700, if missing), whatever the umask. Rotation
    costs each write a clock read and a byte count: the rotated files are listed at start, at
    a rotation, on a flush (with an age limit) and when the age limit of the current file or
    of the oldest rotated one falls due. A daemon that writes nothing deletes nothing.
    """

    def __init__(
        self,
        path: Path,
        options: TraceOptions | None = None,
        flush_every: int = 256,
        clock: Callable[[], float] = time.time,
        hash_key: bytes | None = None,
    ) -> None:
        self._path = path
        self._options = options if options is not None else TraceOptions()
        self._key = hash_key if hash_key is not None else secrets.token_bytes(32)
        self._clock = clock
        self._flush_every = flush_every
        self._unflushed = 0
        _make_private_dir(path.parent)
        self._file, self._size = _open_private(path)
        now = clock()
        self._started: float | None = _first_time(path) if self._size else None
        self._oldest_rotated = self._prune(now)
        self._due = self._next_due()

    def write(self, record: Mapping[str, object]) -> None:
        """Append one record as strict JSON (RFC 8259: no NaN or Infinity tokens)."""
        if self._options.context != "full":
            record = redact(record, self._options.context, self._key)
        try:
            line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        except ValueError:  # a non-finite number: written as null, never as a bare NaN
            line = json.dumps(_finite(record), separators=(",", ":"), allow_nan=False)
        data = line.encode() + b"\n"
        now = self._clock()
        if now >= self._due:
            self._expire(now)
        limit = self._options.max_bytes
        if limit and self._size and self._size + len(data) > limit:
            self._rotate(now)
        if not self._size:
            self._started = now
            self._due = self._next_due()
        self._file.write(data)
        self._size += len(data)
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        """Write out the buffer; then apply the age limit (a scan of the rotated files)."""
        self._file.flush()
        self._unflushed = 0
        if self._options.max_age_s:
            self._expire(self._clock())

    def close(self) -> None:
        self._file.close()

    def _expire(self, now: float) -> None:
        """Rotate the current file if its first record reached max_age_s, else prune."""
        age_s = self._options.max_age_s
        if self._started is not None and now - self._started >= age_s:
            self._rotate(now)
            return
        self._oldest_rotated = self._prune(now)
        self._due = self._next_due()

    def _rotate(self, now: float) -> None:
        """<path>.N-1 -> .N (the old .N goes), ..., <path> -> .1; a fresh <path>; prune."""
        self._file.close()
        keep = self._options.keep_files
        if keep == 0:
            self._path.unlink(missing_ok=True)
        else:
            for i in range(keep - 1, 0, -1):
                older = self._rotated(i)
                if older.exists():
                    older.replace(self._rotated(i + 1))
            with contextlib.suppress(FileNotFoundError):  # someone removed it meanwhile
                self._path.replace(self._rotated(1))
        self._file, self._size = _open_private(self._path)
        self._started = None
        self._oldest_rotated = self._prune(now)
        self._due = self._next_due()

    def _rotated(self, index: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{index}")

    def _prune(self, now: float) -> float:
        """Delete rotated files past keep_files or max_age_s; the oldest kept one's mtime."""
        keep, age_s = self._options.keep_files, self._options.max_age_s
        prefix = self._path.name + "."
        oldest = math.inf
        with os.scandir(self._path.parent) as entries:
            for entry in entries:
                suffix = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
                if not (suffix.isascii() and suffix.isdigit() and suffix[0] != "0"):
                    continue
                try:
                    mtime = entry.stat().st_mtime
                    if int(suffix) > keep or (age_s and now - mtime >= age_s):
                        os.unlink(entry.path)
                    else:
                        oldest = min(oldest, mtime)
                except FileNotFoundError:  # removed meanwhile: nothing to do
                    continue
        return oldest

    def _next_due(self) -> float:
        """When the next age limit falls due (inf: never, or nothing to age)."""
        age_s = self._options.max_age_s
        if not age_s:
            return math.inf
        due = self._oldest_rotated + age_s
        if self._started is not None:
            due = min(due, self._started + age_s)
        return due


def redact(record: Mapping[str, object], mode: TraceContext, key: bytes) -> Mapping[str, object]:
    """A decision record as `mode` keeps it (module doc); other records unchanged."""
    if mode == "full" or record.get("type") != "decision":
        return record
    out = dict(record)
    out["redacted"] = mode
    candidates = record.get("candidates")
    if mode == "drop":
        for name in ("context", "x", "scores"):
            out.pop(name, None)
        if isinstance(candidates, list):
            out["candidates"] = [
                {k: v for k, v in c.items() if k != "features"} if isinstance(c, Mapping) else c
                for c in candidates
            ]
        return out
    if "context" in record:
        out["context"] = _mask("context", record["context"], key)
    if isinstance(candidates, list):
        out["candidates"] = [
            {k: _mask(k, v, key) if k == "features" else v for k, v in c.items()}
            if isinstance(c, Mapping)
            else c
            for c in candidates
        ]
    return out


def _mask(name: str, value: object, key: bytes) -> object:
    """Names kept; a string becomes a keyed digest of (name, value); anything else null."""
    if isinstance(value, Mapping):
        return {str(k): _mask(str(k), v, key) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(name, v, key) for v in value]
    if isinstance(value, str):
        message = f"{name}\0{value}".encode(errors="surrogatepass")
        return "h:" + hmac.new(key, message, hashlib.sha256).hexdigest()[:16]
    return None


def _make_private_dir(directory: Path) -> None:
    """Create `directory` 0700 if it is missing (an existing one is left as it is)."""
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        return
    os.chmod(directory, 0o700)  # mkdir's mode went through the umask


def _open_private(path: Path) -> tuple[BinaryIO, int]:
    """`path` opened for appending, mode 0600 (also if it existed: the trace is private),
    and its size."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(PermissionError):  # another user's file: left as it is
            os.fchmod(fd, 0o600)
        size = os.fstat(fd).st_size
        return os.fdopen(fd, "ab"), size
    except BaseException:
        os.close(fd)
        raise


def _first_time(path: Path) -> float:
    """The `t` of a trace file's first record (its mtime if that is unreadable)."""
    unreadable = (OSError, ValueError, TypeError, KeyError, IndexError)
    with contextlib.suppress(*unreadable), path.open("rb") as f:
        return float(json.loads(f.readline())["t"])
    return path.stat().st_mtime


def _finite(value: object) -> object:
    """`value` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def trace_files(path: Path) -> list[Path]:
    """The files of the trace configured as `path`: the file itself and, if worker processes
    wrote it (server.workers > 1), each worker's `<path>.w<i>`, in worker order. Rotated files
    (`<path>.1`, `<path>.w0.1`, ...) are not included: read them by name."""
    prefix = path.name + ".w"
    try:
        names = os.listdir(path.parent)
    except OSError:
        names = []
    workers = sorted(
        (int(name[len(prefix) :]), name)
        for name in names
        if name.startswith(prefix) and name[len(prefix) :].isascii()
        and name[len(prefix) :].isdigit()
    )  # fmt: skip
    files = [path.with_name(name) for _, name in workers]
    return [path, *files] if path.exists() or not files else files


def read_trace(path: Path) -> Iterator[dict[str, object]]:
    """Stream a trace's records (constant memory; large traces are fine). A trace that worker
    processes wrote (one file per worker, `trace_files`) is read as one: the files' records
    merged in time order (`t`), so a reward that reached another worker than its decision
    still follows it."""
    files = trace_files(path)
    if len(files) == 1:
        yield from _read_file(files[0])
    else:
        yield from heapq.merge(*(_read_file(f) for f in files), key=_time)


def _time(record: dict[str, object]) -> float:
    t = record.get("t")
    return float(t) if isinstance(t, int | float) else 0.0


def _read_file(path: Path) -> Iterator[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
            if record.get("type") not in ("decision", "outcome"):
                raise ValueError(f"{path}:{n}: unknown record type {record.get('type')!r}")
            yield record


def logged_rows(
    path: Path, policy: str, arms: Sequence[str] = ()
) -> tuple[list[str], list[tuple[list[float], int, float, float]]]:
    """(arm order, rows) of one policy's decisions joined with the reward each one got:
    row = (x, index of the logged arm, reward, logged propensity). Streams the trace; keeps
    only pending decisions in memory. Decisions never settled, or settled without a reward
    (dropped), are left out. `arms` fixes the arm order (others are appended as first seen).
    A decision without x (written with trace_context = "drop") is a RedactedTraceError.

    Only the outcome that settled a decision (applied, defaulted, dropped) joins it, whatever
    the order: in a trace of several worker files (`read_trace`) a duplicate's record can come
    before the applied one, and an outcome before its decision (a decision's `t` is its
    Route's start, written when the Route ends)."""
    order = list(arms)
    index = {a: i for i, a in enumerate(order)}
    pending: dict[str, tuple[list[float], str, float]] = {}
    early: dict[str, object] = {}  # settling outcomes of this policy read before the decision
    rows: list[tuple[list[float], int, float, float]] = []

    def join(decision: tuple[list[float], str, float], reward: object) -> None:
        if reward is None:
            return
        x, arm, propensity = decision
        if arm not in index:
            index[arm] = len(order)
            order.append(arm)
        rows.append((x, index[arm], float(reward), propensity))  # type: ignore[arg-type]

    for record in read_trace(path):
        decision_id = str(record["decision_id"])
        if record["type"] == "decision":
            if record["policy"] != policy:
                continue
            if record.get("x") is None:
                raise RedactedTraceError(
                    f"{path}: decision {record['decision_id']} has no x"
                    f" (traced with trace_context = {record.get('redacted', '?')!r})"
                )
            x = [float(v) for v in record["x"]]  # type: ignore[attr-defined]
            decision = (x, str(record["arm"]), float(record["propensity"]))  # type: ignore[arg-type]
            if decision_id in early:
                join(decision, early.pop(decision_id))
            else:
                pending[decision_id] = decision
            continue
        if record.get("outcome") not in SETTLING:
            continue
        got = pending.pop(decision_id, None)
        if got is not None:
            join(got, record.get("reward"))
        elif decision_id.startswith(policy + ":"):
            early[decision_id] = record.get("reward")
    return order, rows
