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
from collections.abc import Iterator, Mapping
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
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._unflushed = 0

    def close(self) -> None:
        self._file.close()


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
