"""What the daemon answers on grpc.health.v1: one service name per question (docs/deploy.md).

- `""` (LIVENESS): can the process serve? SERVING from start until stop. The store never moves
  it, so a Redis outage restarts nothing.
- `banditd.v1.Router` (READINESS): can Route answer, degraded included? SERVING from start until
  stop. With `server.readiness_requires_store` it is also NOT_SERVING while the store is
  unreachable; off by default, because Route answers from the cached model and buffers its
  decisions, and a readiness that follows Redis takes every replica out of the Service at once.
- `banditd.v1.Learning` (LEARNING): does the store take updates (Feedback, expiry)? NOT_SERVING
  while Redis is unreachable, and from stop on; always SERVING on the memory store. A health
  name only: no RPC service of that name exists.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

from banditd.api.v1 import bandit_pb2 as pb
from banditd.server.metrics import Metrics

LIVENESS = ""
READINESS = pb.DESCRIPTOR.services_by_name["Router"].full_name
LEARNING = "banditd.v1.Learning"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthStatus:
    """Sets the three health names, and the gauges that mirror them, from the daemon's state."""

    def __init__(
        self, servicer: health.aio.HealthServicer, metrics: Metrics, readiness_requires_store: bool
    ) -> None:
        self._servicer = servicer
        self._metrics = metrics
        self._requires_store = readiness_requires_store
        self._stopped = False

    async def start(self, store_up: bool) -> None:
        """The server is listening: alive, ready, and learning if the store answers."""
        await self._servicer.set(LIVENESS, _SERVING)
        await self.store(store_up)

    async def store(self, up: bool) -> None:
        """The store answered (or not): the learning path follows it; readiness only if asked."""
        if self._stopped:
            return
        ready = up or not self._requires_store
        await self._servicer.set(LEARNING, _SERVING if up else _NOT_SERVING)
        await self._servicer.set(READINESS, _SERVING if ready else _NOT_SERVING)
        self._metrics.store_up.set(1 if up else 0)
        self._metrics.serving.set(1 if ready else 0)

    async def stop(self) -> None:
        """Shutting down: every name NOT_SERVING for good (later `store` calls change nothing)."""
        self._stopped = True
        await self._servicer.enter_graceful_shutdown()
        self._metrics.serving.set(0)
