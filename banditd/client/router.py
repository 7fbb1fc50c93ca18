"""Clients of the Router service (Route, Feedback, FeedbackBatch): blocking and asyncio."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, Unpack

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.client.results import Decision, FeedbackItemResult, FeedbackResult
from banditd.client.transport import (
    DEFAULT_RETRY,
    Connection,
    ConnectOptions,
    MetadataLike,
    RetryPolicy,
    retry_options,
)

CandidateLike = str | Mapping[str, Any] | pb.Candidate
Rewards = Mapping[str, float] | Sequence[pb.FeedbackRequest]


class RouteContext(TypedDict, total=False):
    """What Route may know about the request, besides policy and candidates (bandit.proto)."""

    features: Mapping[str, float]  # numeric features by name
    text: str  # for policies with a text encoder
    segment: str  # context partition; each (policy, segment) learns separately
    categorical: Mapping[str, str]
    embedding: Sequence[float]  # a precomputed text embedding (skips the encoder)
    replica: str  # the serving replica, for adapter paging


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
    replica: str = "",
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
        replica=replica,
    )


def feedback_request(
    decision_id: str, reward: float | None = None, **metrics: float
) -> pb.FeedbackRequest:
    request = pb.FeedbackRequest(decision_id=decision_id, metrics=metrics)
    if reward is not None:
        request.reward = reward
    return request


def feedback_batch_request(rewards: Rewards) -> pb.FeedbackBatchRequest:
    """{decision_id: reward}, or FeedbackRequests (for metrics), as one FeedbackBatch."""
    if isinstance(rewards, Mapping):
        return pb.FeedbackBatchRequest(
            items=[feedback_request(d, reward) for d, reward in rewards.items()]
        )
    return pb.FeedbackBatchRequest(items=list(rewards))


class _RouterConnection(Connection):
    def __init__(
        self,
        target: str,
        timeout_s: float,
        *,
        aio: bool,
        retry: RetryPolicy | None,
        **connect: Unpack[ConnectOptions],
    ) -> None:
        connect["options"] = retry_options(retry) + tuple(connect.get("options", ()))
        super().__init__(target, timeout_s, aio=aio, **connect)
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]


class Client(_RouterConnection):
    """Blocking client. One channel; safe to share between threads.

    Connection options (TLS, token, metadata, channel options): `ConnectOptions`. `metadata`
    goes on every call (after the token), a call's own `metadata` after it. `timeout_s` is a
    call's default deadline, all its attempts included. `retry` retries Feedback and
    FeedbackBatch when the daemon answers UNAVAILABLE (`RetryPolicy`); None turns that off.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        timeout_s: float = 2.0,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        **connect: Unpack[ConnectOptions],
    ) -> None:
        super().__init__(target, timeout_s, aio=False, retry=retry, **connect)

    def route(
        self,
        policy: str,
        candidates: Sequence[CandidateLike],
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
        **context: Unpack[RouteContext],
    ) -> Decision:
        """Pick one of the candidates for this context. Never retried: a repeat would be a new
        decision."""
        request = route_request(policy, candidates, **context)
        response = self._stub.Route(request, **self._call(metadata, timeout_s))
        return Decision.from_proto(response)

    def feedback(
        self,
        decision_id: str,
        reward: float | None = None,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
        **metrics: float,
    ) -> FeedbackResult:
        """The reward of a decision, or named metrics the policy combines into one."""
        request = feedback_request(decision_id, reward, **metrics)
        response = self._stub.Feedback(request, **self._call(metadata, timeout_s))
        return FeedbackResult.from_proto(response)

    def feedback_batch(
        self,
        rewards: Rewards,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> list[FeedbackItemResult]:
        """One result per item, in order; check each result's `ok` (or `code`)."""
        request = feedback_batch_request(rewards)
        response = self._stub.FeedbackBatch(request, **self._call(metadata, timeout_s))
        return [FeedbackItemResult.from_proto(r) for r in response.results]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_RouterConnection):
    """asyncio client; create and use it inside one event loop. Options as `Client`'s."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        timeout_s: float = 2.0,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        **connect: Unpack[ConnectOptions],
    ) -> None:
        super().__init__(target, timeout_s, aio=True, retry=retry, **connect)

    async def route(
        self,
        policy: str,
        candidates: Sequence[CandidateLike],
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
        **context: Unpack[RouteContext],
    ) -> Decision:
        """As `Client.route`."""
        request = route_request(policy, candidates, **context)
        response = await self._stub.Route(request, **self._call(metadata, timeout_s))
        return Decision.from_proto(response)

    async def feedback(
        self,
        decision_id: str,
        reward: float | None = None,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
        **metrics: float,
    ) -> FeedbackResult:
        """As `Client.feedback`."""
        request = feedback_request(decision_id, reward, **metrics)
        response = await self._stub.Feedback(request, **self._call(metadata, timeout_s))
        return FeedbackResult.from_proto(response)

    async def feedback_batch(
        self,
        rewards: Rewards,
        *,
        metadata: MetadataLike | None = None,
        timeout_s: float | None = None,
    ) -> list[FeedbackItemResult]:
        """As `Client.feedback_batch`."""
        request = feedback_batch_request(rewards)
        response = await self._stub.FeedbackBatch(request, **self._call(metadata, timeout_s))
        return [FeedbackItemResult.from_proto(r) for r in response.results]

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
