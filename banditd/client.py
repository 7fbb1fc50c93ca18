"""A small Python client for banditd (sync `Client` and asyncio `AsyncClient`).

    from banditd.client import Client
    with Client("127.0.0.1:50051") as bandit:
        d = bandit.route("chat", ["small-8b", "large-70b"], features={"prompt_tokens": 812})
        ...serve the request with d.arm_id...
        bandit.feedback(d.decision_id, reward=1.0)

Errors arrive as grpc.RpcError with the daemon's status code and message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc

CandidateLike = str | Mapping[str, Any] | pb.Candidate


def _candidate(c: CandidateLike) -> pb.Candidate:
    if isinstance(c, pb.Candidate):
        return c
    if isinstance(c, str):
        return pb.Candidate(id=c)
    return pb.Candidate(**c)


def route_request(
    policy: str,
    candidates: Sequence[CandidateLike],
    features: Mapping[str, float] | None = None,
    text: str = "",
    segment: str = "",
    categorical: Mapping[str, str] | None = None,
    embedding: Sequence[float] = (),
) -> pb.RouteRequest:
    return pb.RouteRequest(
        policy=policy,
        segment=segment,
        context=pb.Context(
            text=text,
            features=dict(features or {}),
            categorical=dict(categorical or {}),
            embedding=list(embedding),
        ),
        candidates=[_candidate(c) for c in candidates],
    )


def feedback_request(
    decision_id: str, reward: float | None = None, **metrics: float
) -> pb.FeedbackRequest:
    request = pb.FeedbackRequest(decision_id=decision_id, metrics=metrics)
    if reward is not None:
        request.reward = reward
    return request


def feedback_batch_request(
    rewards: Mapping[str, float] | Sequence[pb.FeedbackRequest],
) -> pb.FeedbackBatchRequest:
    """{decision_id: reward}, or FeedbackRequests (for metrics), as one FeedbackBatch."""
    if isinstance(rewards, Mapping):
        return pb.FeedbackBatchRequest(
            items=[feedback_request(d, reward) for d, reward in rewards.items()]
        )
    return pb.FeedbackBatchRequest(items=list(rewards))


class Client:
    """Blocking client. One channel; safe to share between threads."""

    def __init__(self, target: str = "127.0.0.1:50051", timeout_s: float = 2.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s

    def route(
        self, policy: str, candidates: Sequence[CandidateLike], **kw: Any
    ) -> pb.RouteResponse:
        response: pb.RouteResponse = self._stub.Route(
            route_request(policy, candidates, **kw), timeout=self._timeout_s
        )
        return response

    def feedback(
        self, decision_id: str, reward: float | None = None, **metrics: float
    ) -> pb.FeedbackResponse:
        response: pb.FeedbackResponse = self._stub.Feedback(
            feedback_request(decision_id, reward, **metrics), timeout=self._timeout_s
        )
        return response

    def feedback_batch(
        self, rewards: Mapping[str, float] | Sequence[pb.FeedbackRequest]
    ) -> list[pb.FeedbackBatchResult]:
        """One result per item, in order; check each result's `code` (0 = OK)."""
        response: pb.FeedbackBatchResponse = self._stub.FeedbackBatch(
            feedback_batch_request(rewards), timeout=self._timeout_s
        )
        return list(response.results)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client; create and use it inside one event loop."""

    def __init__(self, target: str = "127.0.0.1:50051", timeout_s: float = 2.0) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s

    async def route(
        self, policy: str, candidates: Sequence[CandidateLike], **kw: Any
    ) -> pb.RouteResponse:
        response: pb.RouteResponse = await self._stub.Route(
            route_request(policy, candidates, **kw), timeout=self._timeout_s
        )
        return response

    async def feedback(
        self, decision_id: str, reward: float | None = None, **metrics: float
    ) -> pb.FeedbackResponse:
        response: pb.FeedbackResponse = await self._stub.Feedback(
            feedback_request(decision_id, reward, **metrics), timeout=self._timeout_s
        )
        return response

    async def feedback_batch(
        self, rewards: Mapping[str, float] | Sequence[pb.FeedbackRequest]
    ) -> list[pb.FeedbackBatchResult]:
        """One result per item, in order; check each result's `code` (0 = OK)."""
        response: pb.FeedbackBatchResponse = await self._stub.FeedbackBatch(
            feedback_batch_request(rewards), timeout=self._timeout_s
        )
        return list(response.results)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
