"""`pip install banditd` is the client: importing it loads none of the server's stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What the server extra brings and a client application should not pay for (import time,
# memory, version conflicts): top-level module names. (grpc_health and grpc_reflection are left
# out: `import grpc` itself imports them when they are installed, to alias grpc.health.)
SERVER_ONLY = ("numpy", "scipy", "onnxruntime", "tokenizers", "pydantic", "pydantic_settings",
               "structlog", "redis", "prometheus_client")  # fmt: skip


@pytest.mark.parametrize(
    "module", ["banditd.client", "banditd.api.v1.bandit_pb2_grpc", "banditd.api.v1.admin_pb2_grpc"]
)
def test_importing_the_client_loads_no_server_package(module: str) -> None:
    """In a fresh interpreter, the client and the generated stubs import grpc and protobuf only."""
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = {name.partition(".")[0] for name in json.loads(out.stdout)}
    assert "grpc" in loaded  # the check sees third-party modules at all
    assert loaded.isdisjoint(SERVER_ONLY), sorted(loaded & set(SERVER_ONLY))
