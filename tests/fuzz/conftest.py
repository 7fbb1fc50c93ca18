"""The fuzz suite's real parts: the integration suite's redis-server fixture."""

from tests.integration.conftest import redis_url

__all__ = ["redis_url"]
