"""onnxruntime is loaded only for a text policy, and with its telemetry events off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest

from banditd.features import encoder as encoder_module
from banditd.features.encoder import EncoderOptions, OnnxTextEncoder

ROOT = Path(__file__).resolve().parents[3]

# Builds a daemon from the config file in argv[1], starts it, sends one Route over gRPC on
# loopback, stops it, and prints which of the heavy modules the process had imported.
_SERVE_ONE_ROUTE = """
import asyncio, json, sys
from pathlib import Path
import grpc
from banditd.api.v1 import bandit_pb2 as pb, bandit_pb2_grpc as pb_grpc
from banditd.config import load_settings
from banditd.server.app import build_daemon

async def main() -> None:
    daemon = build_daemon(load_settings(Path(sys.argv[1])))
    await daemon.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            context = pb.Context(features={"x": 1.0}, text="hello")
            reply = await pb_grpc.RouterStub(channel).Route(pb.RouteRequest(
                policy="p", context=context, candidates=[pb.Candidate(id="a")]))
            assert reply.arm_id == "a"
    finally:
        await daemon.stop(grace_s=0)
    print(json.dumps({m: m in sys.modules for m in ("onnxruntime", "tokenizers")}))

asyncio.run(main())
"""


def _modules_after_one_route(config: Path) -> dict[str, bool]:
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_ONE_ROUTE, str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _config(tmp_path: Path, features: str) -> Path:
    path = tmp_path / "banditd.toml"
    path.write_text(
        '[server]\nlisten = "127.0.0.1:0"\nmetrics_listen = ""\nadmin_listen = ""\n'
        f'[policies.p]\narms = ["a"]\nfeatures.numeric = ["x"]\n{features}'
    )
    return path


def test_a_numeric_only_daemon_never_imports_onnxruntime(tmp_path: Path) -> None:
    """Build, serve a Route, stop: onnxruntime (and tokenizers) never enter sys.modules."""
    modules = _modules_after_one_route(_config(tmp_path, ""))
    assert modules == {"onnxruntime": False, "tokenizers": False}


def test_a_text_policy_imports_onnxruntime(tmp_path: Path, ngram_model: Path) -> None:
    """The same check sees the import where one happens (a policy with an n-gram text block)."""
    text = f'features.text = {{ encoder = "ngram", model_path = "{ngram_model}", dim = 4 }}\n'
    assert _modules_after_one_route(_config(tmp_path, text))["onnxruntime"] is True


def test_telemetry_events_are_off_before_the_first_session(
    ngram_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first encoder switches onnxruntime's telemetry off, then creates its session."""
    calls: list[str] = []
    disable, session = onnxruntime.disable_telemetry_events, onnxruntime.InferenceSession

    def disable_spy() -> None:
        calls.append("disable_telemetry_events")
        disable()

    def session_spy(*args: object, **kwargs: object) -> object:
        calls.append("InferenceSession")
        return session(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", disable_spy)
    monkeypatch.setattr(onnxruntime, "InferenceSession", session_spy)
    encoder_module._onnxruntime.cache_clear()  # as in a fresh process: nothing loaded yet
    try:
        OnnxTextEncoder(EncoderOptions(kind="ngram", model_path=str(ngram_model)))
        OnnxTextEncoder(EncoderOptions(kind="ngram", model_path=str(ngram_model)))
    finally:
        encoder_module._onnxruntime.cache_clear()
    assert calls == ["disable_telemetry_events", "InferenceSession", "InferenceSession"]
