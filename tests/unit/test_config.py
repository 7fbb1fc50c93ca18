"""Settings precedence: flags > env > TOML file > defaults; clear validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from banditd.cli import main
from banditd.config import load_settings
from banditd.errors import ConfigError

TOML = """
seed = 3
[server]
listen = "127.0.0.1:7000"
grace_s = 4
[policies.chat]
alpha = 0.5
arms = ["a", "b"]
decay_half_life_s = 160
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "banditd.toml"
    path.write_text(TOML)
    return path


def test_file_overrides_defaults(config: Path) -> None:
    """Values from the TOML file replace defaults; unset ones keep their defaults."""
    s = load_settings(config)
    assert s.server.listen == "127.0.0.1:7000"
    assert s.server.max_message_bytes == 1 << 20
    assert s.policies["chat"].alpha == 0.5


def test_env_overrides_file_and_merges_nested(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BANDITD_* env beats the file and merges into nested sections."""
    monkeypatch.setenv("BANDITD_SERVER__GRACE_S", "9")
    monkeypatch.setenv("BANDITD_POLICIES__CHAT__L2", "2.5")
    s = load_settings(config)
    assert s.server.grace_s == 9
    assert s.server.listen == "127.0.0.1:7000"
    assert (s.policies["chat"].l2, s.policies["chat"].alpha) == (2.5, 0.5)


def test_flags_override_env(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Command-line flags beat env and file."""
    monkeypatch.setenv("BANDITD_SERVER__LISTEN", "127.0.0.1:8000")
    s = load_settings(config, ["--server.listen", "127.0.0.1:9000"])
    assert s.server.listen == "127.0.0.1:9000"


def test_invalid_values_fail_validation(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A negative alpha is refused with a message naming the field."""
    monkeypatch.setenv("BANDITD_POLICIES__CHAT__ALPHA", "-1")
    with pytest.raises(ValidationError, match="alpha"):
        load_settings(config)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    """An explicitly named config file that does not exist fails, naming it."""
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_half_life_becomes_a_per_interval_decay_factor(config: Path) -> None:
    """half-life 160 s, default interval 10 s: γ = 0.5^(1/16) per interval."""
    policy = load_settings(config).policies["chat"].to_config("chat")
    assert policy.decay_interval_s == 10.0
    assert policy.decay_factor == pytest.approx(0.5 ** (1 / 16))


def test_check_config_masks_secrets_and_exits_2_on_error(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check-config prints the merged settings, or a validation error with exit code 2."""
    assert main(["check-config", "--config", str(config)]) == 0
    assert '"listen": "127.0.0.1:7000"' in capsys.readouterr().out
    monkeypatch.setenv("BANDITD_SERVER__GRACE_S", "-5")
    assert main(["check-config", "--config", str(config)]) == 2
    assert "grace_s" in capsys.readouterr().err


def test_trace_settings_become_the_writer_options(config: Path) -> None:
    """trace_max_mb is MiB; defaults rotate at 128 MiB, keep 4 files for 7 days, full context."""
    defaults = load_settings(config).trace_options()
    assert (defaults.max_bytes, defaults.keep_files) == (128 << 20, 4)
    assert (defaults.max_age_s, defaults.context) == (7 * 86_400.0, "full")
    flags = ["--trace_max_mb", "2", "--trace_keep_files", "0", "--trace_max_age_s", "0",
             "--trace_context", "hash"]  # fmt: skip
    options = load_settings(config, flags).trace_options()
    assert (options.max_bytes, options.keep_files, options.max_age_s) == (2 << 20, 0, 0.0)
    assert options.context == "hash"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TRACE_MAX_MB", "0"),
        ("TRACE_MAX_MB", "1.5"),
        ("TRACE_KEEP_FILES", "-1"),
        ("TRACE_MAX_AGE_S", "-1"),
        ("TRACE_MAX_AGE_S", "nan"),
        ("TRACE_MAX_AGE_S", "inf"),
        ("TRACE_CONTEXT", "sha256"),
    ],
)
def test_bad_trace_retention_values_are_refused(
    config: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    """A trace that could never rotate, a negative count or age, or an unknown mode fails."""
    monkeypatch.setenv(f"BANDITD_{field}", value)
    with pytest.raises(ValidationError, match=field.lower()):
        load_settings(config)
