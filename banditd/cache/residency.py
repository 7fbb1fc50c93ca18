"""Per-replica adapter residency: the ResidencyStore port and its in-memory adapter.

A replica is one serving process with its own fast memory (a sidecar's GPU). The serving stack
reports what it holds (ReportResidency); banditd also updates its view when it issues a plan
(it is the authority on what should be resident). In-memory only for now: each banditd
replica keeps its own view, so a replica's reports must reach the banditd that routes for it.
"""

from __future__ import annotations

from typing import Protocol

from banditd.cache.controller import Residency


class ResidencyStore(Protocol):
    """Where the residency of each serving replica is kept."""

    async def get(self, replica: str) -> Residency | None:
        """The last known residency of this replica (None: never reported nor planned)."""
        ...

    async def put(self, replica: str, residency: Residency) -> None: ...

    async def replicas(self) -> list[str]: ...


class InMemoryResidencyStore:
    """A dict of replica -> Residency. No I/O; residency values are immutable."""

    def __init__(self) -> None:
        self._by_replica: dict[str, Residency] = {}

    async def get(self, replica: str) -> Residency | None:
        return self._by_replica.get(replica)

    async def put(self, replica: str, residency: Residency) -> None:
        self._by_replica[replica] = residency

    async def replicas(self) -> list[str]:
        return sorted(self._by_replica)
