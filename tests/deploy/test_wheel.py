"""The wheel as a user gets it: built from this tree, installed into fresh venvs, nothing else.

- Its file list: the .proto files, the example configs, the n-gram graph, LICENSE.
- `pip install banditd` (no extras): the requirements are grpcio and protobuf only, none of the
  server's stack gets installed, `import banditd.client` works, and `banditd serve` says which
  extra to install (one line, exit 2).
- `pip install 'banditd[server]'`: `banditd serve` on every shipped example config (listeners
  moved to free loopback ports), then a Route and a Feedback through the installed client.

The wheel is built without build isolation (no network for setuptools); the venvs get their
dependencies from pip's configured index and cache, as a user's would. 45-55 s in all on this
busy 2-core machine (build 4-6 s, the server install 15-23 s, each daemon from start to SIGTERM
6-11 s), hence `slow`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import banditd.examples
from tests.deploy.conftest import ROOT, free_listeners
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SERVER_ONLY = {"numpy", "scipy", "onnxruntime", "tokenizers", "pydantic", "pydantic-settings",
               "structlog", "redis", "prometheus-client", "grpcio-health-checking",
               "grpcio-reflection"}  # fmt: skip
STARTUP_TIMEOUT_S = 60.0

# Run with the venv's python, outside the source tree: Route + Feedback with the installed client.
CLIENT = """
import json, sys, time, tomllib
import grpc
import banditd.client
from banditd.client import Client

target, config_path, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
chat = tomllib.loads(open(config_path, encoding="utf-8").read())["policies"]["chat"]
features = chat.get("features", {})
context = {"features": {f if isinstance(f, str) else f["name"]: 1.0
                        for f in features.get("numeric", [])}}
if "text" in features:
    context["text"] = "reverse a linked list in python"
    context["categorical"] = {"lang": "en", "tenant": "acme"}
deadline = time.monotonic() + timeout_s
with Client(target, timeout_s=10) as bandit:
    while True:  # the daemon is starting; a refused Route creates no decision
        try:
            d = bandit.route("chat", chat["arms"], **context)
            break
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    result = bandit.feedback(d.decision_id, reward=1.0)
print(json.dumps({"arm": d.arm_id, "arms": chat["arms"], "status": str(result.status),
                  "client": banditd.client.__file__}))
"""


def _run(
    *argv: str | Path | float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def _venv(path: Path, requirement: str) -> Path:
    """A fresh venv at `path` with `requirement` installed by this interpreter's pip (the venv
    gets no pip of its own, and no package this test environment has)."""
    _run(sys.executable, "-m", "venv", "--without-pip", path).check_returncode()
    python = path / "bin" / "python"
    # --no-compile: byte-compiling scipy & co. would double the install time (35 s against
    # 18 s here); the daemon compiles only what it imports.
    out = _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
               "--no-input", "--no-compile", requirement)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build` from this tree: the sdist, then the wheel built from the sdist (so a
    file missing from the sdist is missing from the wheel too)."""
    out = tmp_path_factory.mktemp("dist")
    built = _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (whl,) = out.glob("banditd-*.whl")
    assert len(list(out.glob("banditd-*.tar.gz"))) == 1
    return whl


@pytest.fixture(scope="module")
def server_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("venv-server") / "venv", f"{wheel}[server]")


@pytest.fixture(scope="module")
def client_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("venv-client") / "venv", str(wheel))


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without BANDITD_* settings or PYTHONPATH (which would reach the tree)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BANDITD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # fmt: skip
    return env | extra


def test_wheel_ships_protos_examples_graph_and_license(wheel: Path) -> None:
    """Everything a user needs beyond the code is in the wheel, and nothing from tests/."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "banditd/api/v1/bandit.proto", "banditd/api/v1/admin.proto",
        "banditd/api/v1/bandit_pb2.pyi", "banditd/py.typed",
        "banditd/features/ngram-v1.onnx", "banditd/state/lua/settle.lua",
        *(f"banditd/examples/{n}" for n in banditd.examples.names()),
    }  # fmt: skip
    assert expected <= names, sorted(expected - names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "protos/", "models/"))]
    for proto in ("bandit.proto", "admin.proto"):  # the copies are the source's (make proto)
        shipped = zipfile.ZipFile(wheel).read(f"banditd/api/v1/{proto}")
        assert shipped == (ROOT / "protos/banditd/api/v1" / proto).read_bytes()


def test_plain_install_is_the_client_alone(client_venv: Path, tmp_path: Path) -> None:
    """No extras: requirements grpcio and protobuf, no server package installed, the client
    imports, and `banditd serve` names the extra to install in one line with exit 2."""
    probe = """
import importlib.metadata as md, json
import banditd.client, banditd.examples
reqs = [r for r in md.requires("banditd") if "extra ==" not in r]
installed = sorted(d.metadata["Name"].lower() for d in md.distributions())
print(json.dumps({"requires": reqs, "installed": installed, "examples": banditd.examples.names()}))
"""
    out = _run(client_venv, "-c", probe, cwd=tmp_path, env=_clean_env())
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert sorted(r.partition(">")[0].partition("<")[0] for r in found["requires"]) == [
        "grpcio", "protobuf",
    ]  # fmt: skip
    assert set(found["installed"]).isdisjoint(SERVER_ONLY), found["installed"]
    assert found["examples"] == banditd.examples.names()

    config = banditd.examples.path("banditd.toml")
    for command in ("serve", "check-config"):
        refused = _run(client_venv.parent / "banditd", command, "--config", config,
                       cwd=tmp_path, env=_clean_env())  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "pip install 'banditd[server]'" in refused.stderr
        assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("example", banditd.examples.names())
def test_installed_daemon_serves_each_example(
    example: str, server_venv: Path, tmp_path: Path
) -> None:
    """`banditd serve` from the server install on the config the wheel ships (found through
    the installed banditd.examples; every listener moved to a free loopback port), then a Route
    and a Feedback with the installed client, then SIGTERM: exit 0."""
    env = _clean_env(**free_listeners(free_port))
    where = _run(server_venv, "-c",
                 f"import banditd.examples as e; print(e.path({example!r}))",
                 cwd=tmp_path, env=env)  # fmt: skip
    assert where.returncode == 0, where.stderr
    config = Path(where.stdout.strip())
    assert config.is_relative_to(server_venv.parent.parent), config  # the installed copy
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [server_venv.parent / "banditd", "serve", "--config", config],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        (tmp_path / "client.py").write_text(CLIENT, encoding="utf-8")
        target = env["BANDITD_SERVER__LISTEN"]
        out = _run(server_venv, tmp_path / "client.py", target, config, STARTUP_TIMEOUT_S,
                   cwd=tmp_path, env=env)  # fmt: skip
        daemon_log = (tmp_path / "daemon.log").read_text(encoding="utf-8")
        assert out.returncode == 0, out.stderr + "\n--- daemon:\n" + daemon_log
        got = json.loads(out.stdout)
        assert got["arm"] in got["arms"]
        assert got["status"] == "FeedbackStatus.APPLIED"
        assert Path(got["client"]).is_relative_to(server_venv.parent.parent)
        if "text" in example:  # the n-gram encoder ran from the graph in the wheel, no build
            assert "site-packages/banditd/features/ngram-v1.onnx" in daemon_log, daemon_log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "daemon.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
