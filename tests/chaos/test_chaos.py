"""The robustness issue's fault suite under pytest (tests/chaos/__init__.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.scenario import run

DECISIONS = 10_000


@pytest.mark.timeout(300)  # ~20-40 s on 2 shared cores; every wait inside is bounded
async def test_rewards_survive_redis_and_replica_faults(tmp_path: Path) -> None:
    """Redis killed, paused, a replica killed: acknowledged rewards = the model, Routes answer."""
    report = await run(DECISIONS, tmp_path)
    table = report.table()
    print(table)
    failures = report.failures()
    assert not failures, "\n".join([table, "", *failures])
