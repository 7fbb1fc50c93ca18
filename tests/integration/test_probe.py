"""`python -m banditd.server.probe` (the image's HEALTHCHECK): light imports, right address."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from banditd.config import ServerSettings, load_settings
from banditd.server import health_status, probe
from banditd.server.app import Daemon, build_daemon
from tests.integration.conftest import daemon_settings, free_port

ROOT = Path(__file__).resolve().parents[2]
# What the probe must not load: the config stack and the numeric / ONNX libraries behind it.
HEAVY = ("numpy", "scipy", "onnxruntime", "pydantic", "pydantic_settings", "banditd.config",
         "structlog", "redis", "prometheus_client", "tokenizers")  # fmt: skip


async def run_probe(*args: str, config: Path | None = None) -> tuple[int, str, str]:
    """Run the probe as the HEALTHCHECK does, with -X importtime; (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("BANDITD_")}
    if config is not None:
        env["BANDITD_CONFIG"] = str(config)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "banditd.server.probe", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def imported(importtime: str) -> set[str]:
    """Module names from `-X importtime` lines ('import time: self | cumulative | name')."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


@pytest.fixture
async def probed() -> AsyncIterator[Daemon]:
    """A daemon with a plaintext health listener too, both on free ports."""
    settings = daemon_settings()
    server = {**settings.server.model_dump(), "health_listen": "127.0.0.1:0"}
    d = build_daemon(daemon_settings(server=server))
    await d.start()
    yield d
    await d.stop(grace_s=0)


async def test_probe_imports_only_grpc_and_says_serving(probed: Daemon) -> None:
    """Against a live daemon: exit 0, and none of the heavy modules were imported."""
    code, _, err = await run_probe("--address", f"127.0.0.1:{probed.port}")
    assert code == 0, err
    modules = imported(err)
    assert "grpc" in modules
    assert "grpc_health.v1.health_pb2_grpc" in modules
    assert modules & set(HEAVY) == set()


async def test_probe_finds_the_health_listener_from_the_config(
    probed: Daemon, tmp_path: Path
) -> None:
    """No --address: BANDITD_CONFIG's health_listen (a wildcard host) is probed over loopback."""
    config = tmp_path / "banditd.toml"
    health_port = probed.listeners["health"][1]
    closed = free_port()
    config.write_text(f'[server]\nlisten = "127.0.0.1:{closed}"\n'
                      f'health_listen = "0.0.0.0:{health_port}"\n')  # fmt: skip
    code, _, err = await run_probe("--service", health_status.READINESS, config=config)
    assert code == 0, err
    assert imported(err) & set(HEAVY) == set()


async def test_probe_fails_against_a_closed_port() -> None:
    """Nothing listening: exit 1 with the status on stderr, no traceback."""
    code, _, err = await run_probe("--address", f"127.0.0.1:{free_port()}", "--timeout-s", "1")
    assert code == 1
    assert "unhealthy: 127.0.0.1:" in err
    assert "Traceback" not in err


async def test_probe_fails_when_not_serving(probed: Daemon) -> None:
    """Once readiness is NOT_SERVING (as on SIGTERM) the probe exits 1."""
    address = f"127.0.0.1:{probed.listeners['health'][1]}"
    code, out, err = await run_probe("--address", address, "--service", health_status.READINESS)
    assert code == 0, err
    await probed.status.stop()  # every health name NOT_SERVING, as on SIGTERM
    code, out, err = await run_probe("--address", address, "--service", health_status.READINESS)
    assert code == 1
    assert out.strip() == f"{address} {health_status.READINESS}: NOT_SERVING"


def test_probe_names_and_default_match_the_daemon() -> None:
    """The probe's copies of the health names and the listen default are the daemon's."""
    assert (probe.LIVENESS, probe.READINESS, probe.LEARNING) == (
        health_status.LIVENESS, health_status.READINESS, health_status.LEARNING,
    )  # fmt: skip
    assert ServerSettings().listen == probe.DEFAULT_LISTEN


TOML_CASES = {
    "no file": None,
    "listen only": '[server]\nlisten = "127.0.0.1:7001"\n',
    "health listener": '[server]\nlisten = "127.0.0.1:7001"\nhealth_listen = "0.0.0.0:7002"\n',
    "tls without health": (
        '[server]\nlisten = "127.0.0.1:7001"\n[server.tls]\ncert_file = "c.pem"\n'
        'key_file = "k.pem"\n'
    ),
    "tls with health": (
        '[server]\nlisten = "127.0.0.1:7001"\nhealth_listen = "[::]:7003"\n'
        '[server.tls]\ncert_file = "c.pem"\nkey_file = "k.pem"\n'
    ),
}
ENV_CASES = {
    "no env": {},
    "listen": {"BANDITD_SERVER__LISTEN": "127.0.0.1:7101"},
    "lower case": {"banditd_server__health_listen": "0.0.0.0:7102"},
    "json section": {"BANDITD_SERVER": '{"listen": "127.0.0.1:7103", "health_listen": ""}'},
    "json, then a field": {
        "BANDITD_SERVER": '{"health_listen": "0.0.0.0:7104"}',
        "BANDITD_SERVER__HEALTH_LISTEN": "0.0.0.0:7105",
    },
    "tls off by env": {"BANDITD_SERVER__TLS__CERT_FILE": "", "BANDITD_SERVER__TLS__KEY_FILE": ""},
}


@pytest.mark.parametrize("env_case", list(ENV_CASES))
@pytest.mark.parametrize("toml_case", list(TOML_CASES))
def test_probe_reads_the_address_the_daemon_would_listen_on(
    toml_case: str, env_case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's own reading of file + env gives the address Settings gives (or refuses
    where the daemon would serve TLS only)."""
    for name in list(os.environ):
        if name.upper().startswith("BANDITD_"):
            monkeypatch.delenv(name)
    env = ENV_CASES[env_case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = None
    if (text := TOML_CASES[toml_case]) is not None:
        config = tmp_path / "banditd.toml"
        config.write_text(text)
    server = load_settings(config).server
    if not server.health_listen and server.tls.enabled:
        expected = None
    else:
        expected = probe.local_address(server.health_listen or server.listen)
    assert probe.target(probe.server_table(config, env))[0] == expected
