"""The daemon on the Redis backend, next to bare redis-py round trips, in the same run.

Runs bench/grpc.py's measurement with `store.backend = "redis"` against a redis-server this
section starts on a free loopback port (or --redis-url): the daemon's Route+Feedback round trips
and latency next to the echo ceilings again, and redis-py GET/SET/EVALSHA p50/p99 (the floor
any Redis-backed Route pays). Compare with the in-memory rows of the grpc section.
"""

from __future__ import annotations

from bench import grpc as grpc_section


def main(quick: bool = False, redis_url: str = "", profile: bool = False) -> dict[str, object]:
    return grpc_section.main(
        quick=quick, store="redis", redis_url=redis_url, shapes=[(32, 16)], profile=profile
    )
