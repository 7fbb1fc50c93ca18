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
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO


class JsonlTraceWriter:
    """TraceSink appending JSON lines to a file; buffered, flushed by `flush`/`close`."""

    def __init__(self, path: Path, flush_every: int = 256) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._flush_every = flush_every
        self._unflushed = 0

    def write(self, record: Mapping[str, object]) -> None:
        """Append one record as strict JSON (RFC 8259: no NaN or Infinity tokens)."""
        try:
            line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        except ValueError:  # a non-finite number: written as null, never as a bare NaN
            line = json.dumps(_finite(record), separators=(",", ":"), allow_nan=False)
        self._file.write(line + "\n")
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._unflushed = 0

    def close(self) -> None:
        self._file.close()


def _finite(value: object) -> object:
    """`value` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_trace(path: Path) -> Iterator[dict[str, object]]:
    """Stream a trace's records (constant memory; large traces are fine)."""
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
    (dropped), are left out. `arms` fixes the arm order (others are appended as first seen)."""
    order = list(arms)
    index = {a: i for i, a in enumerate(order)}
    pending: dict[str, tuple[list[float], str, float]] = {}
    rows: list[tuple[list[float], int, float, float]] = []
    for record in read_trace(path):
        if record["type"] == "decision":
            if record["policy"] != policy:
                continue
            x = [float(v) for v in record["x"]]  # type: ignore[attr-defined]
            pending[str(record["decision_id"])] = (
                x, str(record["arm"]), float(record["propensity"]),  # type: ignore[arg-type]
            )  # fmt: skip
            continue
        got = pending.pop(str(record["decision_id"]), None)
        reward = record.get("reward")
        if got is None or reward is None:
            continue
        x, arm, propensity = got
        if arm not in index:
            index[arm] = len(order)
            order.append(arm)
        rows.append((x, index[arm], float(reward), propensity))  # type: ignore[arg-type]
    return order, rows
