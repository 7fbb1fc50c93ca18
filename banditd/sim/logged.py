"""Logged bandit feedback (what off-policy evaluation reads), and loading it from a daemon trace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from banditd.sim.traces import logged_rows

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class LoggedData:
    """Logged bandit feedback: row i chose action[i] with probability pscore[i]."""

    x: Array  # (n, m) context, no bias
    action: IntArray  # (n,)
    reward: Array  # (n,)
    pscore: Array  # (n,)
    position: IntArray  # (n,) slot the item was shown in, dense 0-based (as obp ranks it)
    n_actions: int
    name: str = ""
    arms: tuple[str, ...] = ()  # arm ids by action index ("0".."K-1" when empty)

    @property
    def n(self) -> int:
        return int(self.action.shape[0])


def load_trace(path: Path, policy: str, arms: tuple[str, ...] = ()) -> LoggedData:
    """One policy's logged decisions from a daemon trace (sim/traces.py), as LoggedData.

    x drops the leading bias entry of the daemon's numeric pipeline (the OPE code adds its own).
    Candidate sets that varied between decisions are treated as the full arm set.
    """
    order, rows = logged_rows(path, policy, arms)
    if not rows:
        raise ValueError(f"{path}: no settled decisions of policy {policy!r} with a reward")
    x = np.array([r[0] for r in rows], dtype=np.float64)
    if np.all(x[:, 0] == 1.0):
        x = x[:, 1:]
    return LoggedData(
        x=x,
        action=np.array([r[1] for r in rows], dtype=np.int64),
        reward=np.array([r[2] for r in rows], dtype=np.float64),
        pscore=np.array([r[3] for r in rows], dtype=np.float64),
        position=np.zeros(len(rows), dtype=np.int64),
        n_actions=len(order),
        name=f"trace {path.name} policy {policy}",
        arms=tuple(order),
    )
