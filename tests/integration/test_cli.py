"""The command line as a user meets it: `python -m banditd serve | check-config` in a real
subprocess. Every user error is a short message on stderr and exit 2, never a traceback;
check-config refuses what serve would refuse at start; --help lists the settings flags."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from banditd.cli import main
from banditd.config import Settings
from tests.integration.pki import CA

ROOT = Path(__file__).resolve().parents[2]
# serve never touches a default port here, even if it started by mistake
QUIET_PORTS = ["--server.listen", "127.0.0.1:0", "--server.admin_listen", "127.0.0.1:0",
               "--server.metrics_listen", ""]  # fmt: skip
TEXT_POLICY = """
[policies.chat]
arms = ["a", "b"]
[policies.chat.features.text]
model_path = "{model}"
"""


def banditd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITD_")}
    return subprocess.run(
        [sys.executable, "-m", "banditd", *args],
        cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60,  # a serve that starts instead of refusing fails here, not hangs
    )  # fmt: skip


def assert_refused(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2, no traceback, a short message on stderr that says `expected`."""
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) <= 4, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


@pytest.fixture
def unreadable(tmp_path: Path) -> Path:
    """A file open() succeeds on and read() fails on, for root too (mode 000 stops only
    others): /proc/self/mem at offset 0, which is never mapped."""
    if os.geteuid() != 0:
        path = tmp_path / "secret.toml"
        path.write_text("seed = 1\n")
        path.chmod(0)
        return path
    path = Path("/proc/self/mem")
    if not path.exists():
        pytest.skip("no /proc/self/mem to stand for an unreadable file as root")
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another socket is listening on for the test's duration."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_toml_syntax_error_names_file_line_and_column(tmp_path: Path, command: str) -> None:
    """A TOML typo is reported as file:line:column, as a compiler would."""
    config = tmp_path / "banditd.toml"
    config.write_text('seed = 1\n[server\nlisten = "127.0.0.1:0"\n')
    done = banditd(command, "--config", str(config), *QUIET_PORTS, cwd=tmp_path)
    assert_refused(done, f"{config}:2:8: invalid TOML: Expected ']'")


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_config_files_that_cannot_be_read_are_named(
    tmp_path: Path, unreadable: Path, command: str
) -> None:
    """A directory, a missing file, an unreadable one, and one that is not text."""
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00seed")
    for config, expected in (
        (tmp_path, f"--config {tmp_path} is a directory, not a TOML file"),
        (tmp_path / "nope.toml", f"--config {tmp_path / 'nope.toml'} does not exist"),
        (unreadable, f"cannot read --config {unreadable}: "),
        (binary, "is not UTF-8 text"),
    ):
        assert_refused(banditd(command, "--config", str(config), *QUIET_PORTS, cwd=tmp_path),
                       expected)  # fmt: skip


def test_the_config_named_by_env_is_named_so(tmp_path: Path) -> None:
    """BANDITD_CONFIG pointing at a directory says BANDITD_CONFIG, not --config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITD_")}
    done = subprocess.run(
        [sys.executable, "-m", "banditd", "check-config"], cwd=tmp_path, timeout=60,
        env={**env, "PYTHONPATH": str(ROOT), "BANDITD_CONFIG": str(tmp_path)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert_refused(done, f"BANDITD_CONFIG={tmp_path} is a directory")


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_bad_flag_is_reported_by_the_command_given(tmp_path: Path, command: str) -> None:
    """check-config says `banditd check-config`, not `banditd serve`, and no usage dump."""
    done = banditd(command, "--server.lisen", "127.0.0.1:0", cwd=tmp_path)
    assert_refused(done, f"banditd {command}: unrecognized arguments: --server.lisen")
    other = "serve" if command == "check-config" else "check-config"
    assert f"banditd {other}" not in done.stderr


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_invalid_values_are_one_line_each(tmp_path: Path, command: str) -> None:
    """Validation errors: the dotted setting, what is wrong and the value, nothing else."""
    done = banditd(command, "--server.grace_s", "-3", "--log_level", "loud", cwd=tmp_path)
    assert_refused(done, "server.grace_s: Input should be greater than or equal to 0 (got '-3')",
                   "log_level: ")  # fmt: skip
    assert "errors.pydantic.dev" not in done.stderr


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_text_policy_whose_model_is_missing_or_broken_is_refused(
    tmp_path: Path, command: str
) -> None:
    """Missing model file: refused by both, before anything listens; a file that is not an
    ONNX model too (check-config loads the model as serve does, not just looks for it)."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    for model, expected in (
        (tmp_path / "missing.onnx", f"model file {tmp_path / 'missing.onnx'} does not exist"),
        (broken, f"cannot load ONNX model {broken}"),
    ):
        config = tmp_path / "text.toml"
        config.write_text(TEXT_POLICY.format(model=model))
        done = banditd(command, "--config", str(config), *QUIET_PORTS, cwd=tmp_path)
        assert_refused(done, "policies.chat.features.text: ", expected)


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_policy_template_whose_model_is_missing_is_refused_at_start(
    tmp_path: Path, command: str
) -> None:
    """With auto_create_policies, the template's encoder is loaded at start too, so a missing
    model is found there and not by the first Route naming a new policy."""
    missing = tmp_path / "missing.onnx"
    flags = ["--auto_create_policies", "true", "--policy_template.features.text",
             f'{{"model_path": "{missing}"}}']  # fmt: skip
    done = banditd(command, *QUIET_PORTS, *flags, cwd=tmp_path)
    assert_refused(done, f"policy_template.features.text: text encoder model file {missing}")


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_bad_tls_and_tokens_files_are_refused(tmp_path: Path, command: str) -> None:
    """A missing certificate, a key that is not the certificate's, a CA file that holds no
    certificate, and a tokens file naming no configured caller."""
    ca = CA(tmp_path)
    one, two = ca.issue("one", "banditd"), ca.issue("two", "banditd")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ghost {'0' * 64}\n")
    for flags, expected in (
        (["--server.tls.cert_file", str(tmp_path / "none.crt"), "--server.tls.key_file",
          str(one.key)], "server.tls.cert_file"),
        (["--server.tls.cert_file", str(one.cert), "--server.tls.key_file", str(two.key)],
         "KEY_VALUES_MISMATCH"),
        (["--server.tls.cert_file", str(one.cert), "--server.tls.key_file", str(one.key),
          "--server.tls.client_ca_file", str(one.key)], "is not a PEM CA bundle"),
        (["--auth.tokens_file", str(tokens)], "names callers not in auth.callers: ['ghost']"),
    ):  # fmt: skip
        assert_refused(banditd(command, *QUIET_PORTS, *flags, cwd=tmp_path), expected)


@pytest.mark.parametrize("setting", ["listen", "admin_listen", "metrics_listen"])
def test_serve_on_a_busy_address_says_which_setting(
    tmp_path: Path, busy_port: int, setting: str
) -> None:
    """Another process on the port: one line naming the address, the reason and the setting."""
    flags = ["--server.listen", "127.0.0.1:0", "--server.admin_listen", "127.0.0.1:0",
             "--server.metrics_listen", "127.0.0.1:0", f"--server.{setting}",
             f"127.0.0.1:{busy_port}"]  # fmt: skip
    done = banditd("serve", *flags, cwd=tmp_path)
    assert_refused(
        done, f"banditd: cannot listen on 127.0.0.1:{busy_port}: address already in use"
        f" (server.{setting})"
    )  # fmt: skip


def test_check_config_does_not_bind(tmp_path: Path, busy_port: int) -> None:
    """A busy port is a runtime condition: check-config passes, and prints the settings."""
    done = banditd("check-config", "--server.listen", f"127.0.0.1:{busy_port}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f'"listen": "127.0.0.1:{busy_port}"' in done.stdout


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_help_lists_every_settings_flag(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists each flag pydantic-settings accepts (its own usage is the reference),
    with type and default; per-policy keys are described once."""
    with pytest.raises(SystemExit) as exc:
        Settings(_cli_parse_args=["--help"], _cli_prog_name="reference")  # type: ignore[call-arg]
    assert exc.value.code == 0
    reference = set(re.findall(r"\[(--[\w.]+) (?!\[)", capsys.readouterr().out))
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    listed = capsys.readouterr().out
    assert len(reference) > 100
    assert {flag for flag in reference if f"\n  {flag} " not in listed} == set()
    assert "--server.listen str = 127.0.0.1:50051\n" in listed
    assert "--policy_template.features.text.encoder {ngram,minilm} = ngram\n" in listed
    assert "policies.<name>" in listed
