"""to_route_response: the fast path for unpriced sure choices builds the same message."""

from __future__ import annotations

import numpy as np
import pytest

from banditd.api.v1 import bandit_pb2 as pb
from banditd.policies.choice import Choice, one_hot, zeros
from banditd.router import RouteResult
from banditd.server.service import to_route_response


def _result(penalty: np.ndarray, propensity: np.ndarray, index: int) -> RouteResult:
    k = penalty.shape[0]
    estimate = np.linspace(-1.0, 1.0, k)
    bonus = np.full(k, 0.25)
    choice = Choice(index, estimate, bonus, penalty, estimate + bonus - penalty, propensity)
    ids = tuple(f"arm-{i}" for i in range(k))
    return RouteResult(
        "p:00", ids[index], float(propensity[index]), ids, choice, tuple(range(k)), 7, "linucb",
        False, "fp", 1.0,
    )  # fmt: skip


def _naive(result: RouteResult) -> pb.RouteResponse:
    c = result.choice
    scores = [
        pb.ArmScore(
            arm_id=arm, estimate=float(c.estimate[i]), bonus=float(c.bonus[i]),
            penalty=float(c.penalty[i]), score=float(c.score[i]),
            propensity=float(c.propensity[i]), pulls=result.pulls[i],
        )
        for i, arm in enumerate(result.candidates)
    ]  # fmt: skip
    return pb.RouteResponse(
        decision_id=result.decision_id, arm_id=result.arm, propensity=result.propensity,
        model_version=result.model_version, algorithm=result.algorithm,
        pipeline_fingerprint=result.fingerprint, feedback_deadline_unix_s=result.deadline,
        scores=scores,
    )  # fmt: skip


@pytest.mark.parametrize("k", [1, 2, 16])
@pytest.mark.parametrize(
    "shape", ["shared zeros, shared one-hot", "priced", "tied", "equal but not shared"]
)
def test_route_response_equals_a_field_by_field_build(k: int, shape: str) -> None:
    """Every ArmScore field, on the fast path and the general one."""
    index = k - 1
    penalty, propensity = zeros(k), one_hot(k, index)
    if shape == "priced":
        penalty = np.linspace(0.0, 0.5, k)
    elif shape == "tied":
        propensity = np.full(k, 1.0 / k)
    elif shape == "equal but not shared":
        penalty, propensity = np.zeros(k), np.eye(k)[index]
    result = _result(penalty, propensity, index)
    assert to_route_response(result) == _naive(result)
