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

It runs every few seconds, so it starts fast: it imports grpc, the health stubs and the standard
library only, not `banditd.config` (pydantic, numpy, scipy, onnxruntime): a run against a live
daemon took 111 ms instead of 548 ms (median of 15 on the 2-core dev VM). It reads the settings
it needs (server.listen, health_listen, tls.cert_file) from the TOML file and the environment
with the same precedence as Settings (env BANDITD_SERVER__... over the file over the
defaults); tests/integration/test_probe.py checks that it agrees with `load_settings`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The health names of banditd/server/health_status.py (not imported: it loads the API and
# prometheus_client; a test checks they agree).
LIVENESS = ""
READINESS = "banditd.v1.Router"
LEARNING = "banditd.v1.Learning"
DEFAULT_LISTEN = "127.0.0.1:50051"  # ServerSettings.listen's default (checked by the same test)
ENV_PREFIX = "BANDITD_"

_WILDCARD_HOSTS = {"", "0.0.0.0", "[::]", "::"}  # wildcard listen hosts


def local_address(listen: str) -> str:
    """The loopback address that reaches a server listening on `listen` (host:port)."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in _WILDCARD_HOSTS else listen


def _merge(into: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set `value` at `path` in nested dicts; a dict value is merged key by key."""
    for key in path[:-1]:
        if not isinstance(into.get(key), dict):
            into[key] = {}
        into = into[key]
    last = path[-1]
    if isinstance(value, dict) and isinstance(into.get(last), dict):
        for key, item in value.items():
            _merge(into[last], [key], item)
    else:
        into[last] = value


def server_table(config: Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """The [server] table as Settings would see it: the TOML file, then env over it.

    Env names are case-insensitive, `__` nests (BANDITD_SERVER__TLS__CERT_FILE), and a section's
    variable may hold a JSON object (BANDITD_SERVER='{"listen": ...}'); the more specific
    variable wins.
    """
    merged: dict[str, Any] = {}
    if config is not None:
        with config.open("rb") as f:
            server = tomllib.load(f).get("server", {})
        if isinstance(server, dict):
            merged["server"] = server
    found = []
    for name, raw in environ.items():
        path = name.lower().removeprefix(ENV_PREFIX.lower()).split("__")
        if name.upper().startswith(ENV_PREFIX) and path[0] == "server":
            value: Any = raw
            if raw.lstrip().startswith("{"):
                with contextlib.suppress(ValueError):  # not JSON: pydantic would refuse it
                    value = json.loads(raw)
            found.append((len(path), path, value))
    for _, path, value in sorted(found, key=lambda item: item[0]):
        _merge(merged, path, value)
    table = merged.get("server", {})
    return table if isinstance(table, dict) else {}


def target(server: Mapping[str, Any]) -> tuple[str | None, str]:
    """(the address to probe, or None; why not). The plaintext health listener if there is
    one (it is for probes), else server.listen unless that speaks TLS."""
    health_listen = str(server.get("health_listen") or "")
    tls = server.get("tls")
    tls_on = isinstance(tls, dict) and bool(tls.get("cert_file"))
    if not health_listen and tls_on:
        return None, (
            "server.tls is on and server.health_listen is not set; the probe speaks plaintext:"
            " set health_listen (docs/deploy.md)"
        )
    return local_address(health_listen or str(server.get("listen") or DEFAULT_LISTEN)), ""


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
    if address is None:
        config = os.environ.get("BANDITD_CONFIG")
        try:
            server = server_table(Path(config) if config else None, os.environ)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            print(f"unhealthy: cannot read the config {config}: {exc}", file=sys.stderr)
            return 1
        address, why = target(server)
        if address is None:
            print(f"unhealthy: {why}", file=sys.stderr)
            return 1
    try:
        status = check(address, args.service, args.timeout_s)
    except grpc.RpcError as exc:
        print(f"unhealthy: {address}: {exc.code().name}", file=sys.stderr)
        return 1
    print(f"{address} {args.service or '(liveness)'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
