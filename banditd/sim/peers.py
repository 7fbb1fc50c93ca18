"""Peer libraries as simulator agents, so a scenario shows banditd next to them:
Vowpal Wabbit (`--cb_explore_adf`, contextual, ε-greedy or SquareCB exploration) and MABWiser
(LinUCB / LinTS). Both are optional (the `bench` extra); importing this module does not import
them, building an agent does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from banditd.policies.choice import draw

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


class VowpalAgent:
    """VW contextual bandit with action-dependent features: shared context × action id
    (`-q sa`), i.e. the same disjoint linear model banditd fits; cost = −reward."""

    def __init__(self, n_arms: int, seed: int, args: str = "--epsilon 0.05") -> None:
        from vowpalwabbit import Workspace

        self.name = "vw"
        self._ws = Workspace(f"--cb_explore_adf -q sa --quiet --random_seed {seed} {args}")
        self._rng = np.random.default_rng(seed)
        self._k = n_arms

    def _lines(self, x: Array, arms: npt.NDArray[np.int64]) -> list[str]:
        shared = "shared |s " + " ".join(f"f{i}:{v:.6g}" for i, v in enumerate(x.tolist()))
        return [shared, *(f"|a a{a}" for a in arms.tolist())]

    def decide(self, now: float, x: Array, available: Mask) -> tuple[int, object]:
        arms = np.flatnonzero(available)
        lines = self._lines(x, arms)
        pmf = np.asarray(self._ws.predict(lines), dtype=np.float64)
        i = draw(pmf, self._rng)
        return int(arms[i]), (lines, i, float(pmf[i]))

    def learn(self, ticket: object, reward: float, now: float) -> None:
        assert isinstance(ticket, tuple)
        lines: list[str] = ticket[0]
        i: int = ticket[1]
        p: float = ticket[2]
        labelled = list(lines)
        labelled[i + 1] = f"0:{-reward:.6g}:{max(p, 1e-6):.6g} {lines[i + 1]}"
        self._ws.learn(labelled)

    def tick(self, now: float) -> None:
        return None


class MabwiserAgent:
    """MABWiser LinUCB or LinTS on [1, x]; random arms until the first reward (it needs a fit
    before it can predict), then partial_fit per reward."""

    def __init__(
        self, n_arms: int, seed: int, policy: str = "linucb", params: Mapping[str, Any] = {}
    ) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        if policy == "linucb":
            learning = LearningPolicy.LinUCB(alpha=params.get("alpha", 1.0),
                                             l2_lambda=params.get("l2", 1.0))  # fmt: skip
        elif policy == "lints":
            learning = LearningPolicy.LinTS(alpha=params.get("alpha", 0.5),
                                            l2_lambda=params.get("l2", 1.0))  # fmt: skip
        else:
            raise ValueError(f"unknown mabwiser policy {policy!r} (linucb | lints)")
        self.name = f"mabwiser_{policy}"
        self._mab = MAB(list(range(n_arms)), learning, seed=seed)
        self._fitted = False
        self._rng = np.random.default_rng(seed)

    def decide(self, now: float, x: Array, available: Mask) -> tuple[int, object]:
        xb = np.concatenate(([1.0], x))
        if not self._fitted:
            arm = int(self._rng.choice(np.flatnonzero(available)))
            return arm, (arm, xb)
        expect = self._mab.predict_expectations(xb[None, :])
        values = np.array([expect[a] if available[a] else -np.inf for a in range(len(available))])
        arm = int(np.argmax(values))
        return arm, (arm, xb)

    def learn(self, ticket: object, reward: float, now: float) -> None:
        assert isinstance(ticket, tuple)
        arm: int = ticket[0]
        xb: Array = ticket[1]
        if self._fitted:
            self._mab.partial_fit([arm], [reward], xb[None, :])
        else:
            self._mab.fit([arm], [reward], xb[None, :])
            self._fitted = True

    def tick(self, now: float) -> None:
        return None
