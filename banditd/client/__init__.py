"""The Python client for banditd: `pip install banditd` (grpcio and protobuf, nothing else).

    from banditd.client import Client
    with Client("127.0.0.1:50051") as bandit:
        d = bandit.route("chat", ["small-8b", "large-70b"], features={"prompt_tokens": 812})
        ...serve the request with d.arm_id...
        print(bandit.feedback(d.decision_id, reward=1.0).status)   # FeedbackStatus.APPLIED

Over TLS (the daemon's `server.tls`), as a caller it knows (its `[[auth.callers]]`), with
metadata on every call and on one call:

    bandit = Client("banditd-grpc.llm-serving.svc:50051",
                    tls_ca_file="ca.crt",                              # verify the server
                    tls_cert_file="tls.crt", tls_key_file="tls.key",   # mTLS: our certificate
                    metadata={"x-tenant": "acme"})
    Client("127.0.0.1:50051", token_file="/etc/app/banditd-token")   # or a bearer token
    bandit.route("chat", ["a", "b"], metadata={"x-request-id": "req-42"})

Results are frozen dataclasses (`Decision`, `FeedbackResult`, ...; the protobuf message in
`.raw`). Feedback and FeedbackBatch are retried on UNAVAILABLE by gRPC itself (`RetryPolicy`;
`retry=None` turns it off); Route never is. `AdminClient` / `AsyncAdminClient` speak the Admin
service. Errors arrive as grpc.RpcError with the daemon's status code and message; a caller the
daemon does not know gets UNAUTHENTICATED, one without the role or policy PERMISSION_DENIED.
"""

from banditd.client.admin import ADMIN_TARGET, AdminClient, AsyncAdminClient
from banditd.client.results import (
    Arms,
    ArmScore,
    Decision,
    FeedbackItemResult,
    FeedbackResult,
    FeedbackStatus,
    LearnedArm,
    PolicyInfo,
    SegmentInfo,
    Segments,
)
from banditd.client.router import (
    AsyncClient,
    CandidateLike,
    Client,
    RouteContext,
    feedback_batch_request,
    feedback_request,
    route_request,
)
from banditd.client.transport import (
    DEFAULT_RETRY,
    ConnectOptions,
    RetryPolicy,
    Transport,
    is_loopback,
    metadata_pairs,
    transport,
)

__all__ = [
    "ADMIN_TARGET",
    "DEFAULT_RETRY",
    "AdminClient",
    "ArmScore",
    "Arms",
    "AsyncAdminClient",
    "AsyncClient",
    "CandidateLike",
    "Client",
    "ConnectOptions",
    "Decision",
    "FeedbackItemResult",
    "FeedbackResult",
    "FeedbackStatus",
    "LearnedArm",
    "PolicyInfo",
    "RetryPolicy",
    "RouteContext",
    "SegmentInfo",
    "Segments",
    "Transport",
    "feedback_batch_request",
    "feedback_request",
    "is_loopback",
    "metadata_pairs",
    "route_request",
    "transport",
]
