"""[tracing]: defaults, env, headers, and check-config keeping the headers secret."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from banditd.config import Settings, TracingSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_tracing_is_off_by_default_and_leaves_otel_env_in_charge() -> None:
    """Off; every field empty or unset, so OTEL_* variables and SDK defaults apply."""
    t = Settings().tracing
    assert not t.enabled
    assert (t.endpoint, t.service_name, t.headers, t.sample_ratio) == ("", "", "", None)
    assert t.protocol == "grpc"


def test_tracing_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The [tracing] table, with BANDITD_TRACING__* over it."""
    config = tmp_path / "banditd.toml"
    config.write_text('[tracing]\nenabled = true\nendpoint = "http://collector:4317"\n'
                      "sample_ratio = 0.25\n")  # fmt: skip
    monkeypatch.setenv("BANDITD_TRACING__SERVICE_NAME", "router-eu")
    t = load_settings(config).tracing
    assert (t.enabled, t.endpoint, t.sample_ratio, t.service_name) == (
        True, "http://collector:4317", 0.25, "router-eu",
    )  # fmt: skip


def test_headers_are_pairs_percent_decoded() -> None:
    """As OTEL_EXPORTER_OTLP_HEADERS: k=v pairs, comma-separated, values percent-encoded."""
    t = TracingSettings(headers="Authorization=Bearer%20abc, x-tenant=acme,")
    assert t.header_pairs() == (("authorization", "Bearer abc"), ("x-tenant", "acme"))


@pytest.mark.parametrize(
    "fields", [{"headers": "novalue"}, {"headers": "=v"}, {"sample_ratio": 1.5}]
)
def test_bad_tracing_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TracingSettings(**fields)  # type: ignore[arg-type]


def test_check_config_masks_the_headers(tmp_path: Path) -> None:
    """Headers often carry an API key: check-config prints them masked."""
    config = tmp_path / "banditd.toml"
    config.write_text('[tracing]\nheaders = "api-key=s3cr3t"\n')
    done = subprocess.run(
        [sys.executable, "-m", "banditd", "check-config", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "s3cr3t" not in done.stdout
    start = done.stdout.index("{")
    printed = json.loads(done.stdout[start : done.stdout.rindex("}") + 1])
    assert printed["tracing"]["headers"] == "***"
