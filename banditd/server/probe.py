"""`python -m banditd.server.probe`: exit 0 iff the local daemon's gRPC health says SERVING.

The container image's HEALTHCHECK, and an exec probe for clusters without native gRPC probes
(Kubernetes < 1.24). It reads the same config as `banditd serve` (BANDITD_CONFIG, BANDITD_* env)
to find the port, and asks the standard grpc.health.v1 service about one name
(banditd/server/health_status.py):

- `""` (the default): liveness, the process can serve; a Redis outage never fails it. The
  image's HEALTHCHECK asks this, so an orchestrator that replaces unhealthy containers does not
  replace them all when Redis goes down.
- `banditd.v1.Router`: readiness, Route can answer (degraded included); NOT_SERVING from
  shutdown on, and while Redis is down only with `server.readiness_requires_store`.
- `banditd.v1.Learning`: the learning path, NOT_SERVING while Redis is unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banditd.config import load_settings
from banditd.server.health_status import LEARNING, LIVENESS, READINESS

_WILDCARD_HOSTS = {"", "0.0.0.0", "[::]", "::"}  # wildcard listen hosts


def local_address(listen: str) -> str:
    """The loopback address that reaches a server listening on `listen` (host:port)."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in _WILDCARD_HOSTS else listen


def check(address: str, service: str = "", timeout_s: float = 2.0) -> str:
    """The health status name of `service` at `address` (SERVING, NOT_SERVING, ...)."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m banditd.server.probe", description=__doc__)
    parser.add_argument("--address", help="host:port (default: from server.listen)")
    parser.add_argument(
        "--service", default=LIVENESS,
        help=f"health service name: '' = liveness (default), {READINESS} = readiness,"
        f" {LEARNING} = the learning path (Redis)",
    )  # fmt: skip
    parser.add_argument("--timeout-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    address = args.address
    if address is None:  # the plaintext health listener if there is one (it is for probes)
        config = os.environ.get("BANDITD_CONFIG")
        server = load_settings(Path(config) if config else None).server
        if not server.health_listen and server.tls.enabled:
            print(
                "unhealthy: server.tls is on and server.health_listen is not set; the probe"
                " speaks plaintext: set health_listen (docs/deploy.md)",
                file=sys.stderr,
            )
            return 1
        address = local_address(server.health_listen or server.listen)
    try:
        status = check(address, args.service, args.timeout_s)
    except grpc.RpcError as exc:
        print(f"unhealthy: {address}: {exc.code().name}", file=sys.stderr)
        return 1
    print(f"{address} {args.service or '(liveness)'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
