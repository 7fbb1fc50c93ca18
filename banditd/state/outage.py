"""SpillFile: the outage buffer's decisions on disk across a clean restart of a replica.

While Redis is unreachable, a replica keeps the decisions it routes in memory (redis_store.py)
under buffered ids. If it is stopped before Redis comes back, `close()` writes them here, and
the next start reads them back and flushes them when Redis answers, so their rewards can still
be learned. One JSON object per line; x as a list of floats (Python's repr round-trips every
float64 exactly, so the update is bit for bit the one the decision would have made).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import structlog

from banditd.types import PendingDecision

log = structlog.get_logger("banditd.state")

FORMAT = 1


class SpillFile:
    """One replica's spill file (give each replica its own path, e.g. on its pod's volume).

    `adopted`: spill files this replica takes over (worker processes: the files a run with
    another worker count left). They are read with its own, and removed once their decisions
    are in Redis or in its own file."""

    def __init__(self, path: Path, adopted: tuple[Path, ...] = ()) -> None:
        self.path = path
        self.adopted = adopted

    def write(self, decisions: Iterable[PendingDecision]) -> None:
        """Replace the file with `decisions` (written to a temporary file, then renamed)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # 0600 whatever the umask: the decisions' context vectors are in it (docs/security.md).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for d in decisions:
                f.write(json.dumps({
                    "v": FORMAT, "id": d.decision_id, "policy": d.policy, "segment": d.segment,
                    "arm": d.arm, "x": d.x.tolist(), "propensity": d.propensity,
                    "model_version": d.model_version, "created_at": d.created_at,
                    "deadline": d.deadline, "model_arm": d.model_arm,
                }, allow_nan=False) + "\n")  # fmt: skip
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        for path in self.adopted:  # their decisions were read into the buffer just written
            path.unlink(missing_ok=True)

    def read(self) -> Iterator[PendingDecision]:
        """The decisions previous runs spilled, its own file then the adopted ones (none if
        there is no file; bad lines skipped)."""
        for path in (self.path, *self.adopted):
            yield from self._read(path)

    def _read(self, path: Path) -> Iterator[PendingDecision]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for n, line in enumerate(lines, 1):
            try:
                r = json.loads(line)
                if r.get("v") != FORMAT:
                    log.warning("state.spill_line_skipped", path=str(path), line=n,
                                error=f"format {r.get('v')!r}")  # fmt: skip
                    continue
                yield PendingDecision(
                    str(r["id"]), str(r["policy"]), str(r["segment"]), str(r["arm"]),
                    np.array(r["x"], dtype=np.float64), float(r["propensity"]),
                    int(r["model_version"]), float(r["created_at"]), float(r["deadline"]),
                    str(r["model_arm"]),
                )  # fmt: skip
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("state.spill_line_skipped", path=str(path), line=n,
                            error=str(exc)[:200])  # fmt: skip

    def remove(self) -> None:
        for path in (self.path, *self.adopted):
            path.unlink(missing_ok=True)
