"""Connection parameters and the redis-py client they make (single node or Cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

RedisClient = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """url: redis:// or rediss://; empty strings mean "not set" (the URL's own values win)."""

    url: str
    username: str = ""
    password: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify: bool = True
    timeout_s: float = 0.25
    cluster: bool = False
    max_connections: int = 64


def connect(conn: RedisConnection) -> RedisClient:
    """A lazily connecting client. redis-py retries once, at once, on a fresh connection (a
    pooled one may be stale after a Redis restart); both scripts are idempotent under such a
    retry (a settle whose reply was lost answers DUPLICATE). The store bounds each call by
    timeout_s and decides itself what a failure means (degraded read, buffered record)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": conn.timeout_s,
        "socket_connect_timeout": conn.timeout_s,
        "retry": Retry(NoBackoff(), 1),
        "max_connections": conn.max_connections,
        "health_check_interval": 0,
    }
    if conn.username:
        kwargs["username"] = conn.username
    if conn.password:
        kwargs["password"] = conn.password
    if conn.url.startswith("rediss://"):
        kwargs["ssl_cert_reqs"] = "required" if conn.tls_verify else "none"
        if conn.tls_ca_file:
            kwargs["ssl_ca_certs"] = conn.tls_ca_file
        if conn.tls_cert_file:
            kwargs["ssl_certfile"] = conn.tls_cert_file
        if conn.tls_key_file:
            kwargs["ssl_keyfile"] = conn.tls_key_file
    if conn.cluster:
        del kwargs["health_check_interval"]
        return RedisCluster.from_url(conn.url, **kwargs)
    return Redis.from_url(conn.url, **kwargs)
