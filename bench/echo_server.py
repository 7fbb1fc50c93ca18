"""A bare grpcio banditd.v1.Router with trivial handlers: the ceiling for the daemon.

    python -m bench.echo_server --flavour aio|sync --port PORT --arms K [--reuseport]
        [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]

Route answers a canned RouteResponse shaped like the daemon's (K ArmScores, ids, fingerprint),
built once at start-up, so the ceiling pays the same response serialisation and request parsing
as the daemon but no routing work. Feedback answers a canned APPLIED, FeedbackBatch one canned
APPLIED per item. No health or reflection;
no interceptor (the daemon has none either: banditd/server/request_log.py).
With --tls-cert/--tls-key it listens with TLS (static grpcio credentials; the daemon's are
dynamic, asked once per handshake, so per call they are the same), with --tls-client-ca it
requires a client certificate signed by that CA (mTLS). With --reuseport several processes
serve one port (SO_REUSEPORT, as grpcio's multiprocessing example; bench/workers.py).
Prints "echo_server: serving" once it serves. Runs until SIGTERM/SIGINT.
(Run it with -m: as a script, bench/ would be first on sys.path and
bench/grpc.py would shadow the grpc package.)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc


def canned_route(arms: int) -> pb.RouteResponse:
    scores = [
        pb.ArmScore(
            arm_id=f"a{i}", estimate=0.1 * i, bonus=0.05, penalty=0.0, score=0.1 * i + 0.05,
            propensity=1.0 if i == 0 else 0.0, pulls=100 + i,
        )
        for i in range(arms)
    ]  # fmt: skip
    return pb.RouteResponse(
        decision_id="bench:" + "0" * 24,
        arm_id="a0",
        propensity=1.0,
        scores=scores,
        model_version=12345,
        algorithm="linucb",
        pipeline_fingerprint="disjoint:0:0123456789abcdef",
        feedback_deadline_unix_s=1.9e9,
    )


CANNED_FEEDBACK = pb.FeedbackResponse(
    status=pb.FEEDBACK_STATUS_APPLIED, arm_id="a0", reward=1.0, model_version=12346
)


class CannedBatches:
    """A FeedbackBatchResponse of n canned results per batch size n, built once per size."""

    def __init__(self) -> None:
        self._by_size: dict[int, pb.FeedbackBatchResponse] = {}

    def __call__(self, request: pb.FeedbackBatchRequest) -> pb.FeedbackBatchResponse:
        n = len(request.items)
        response = self._by_size.get(n)
        if response is None:
            decision = "bench:" + "0" * 24
            result = pb.FeedbackBatchResult(decision_id=decision, response=CANNED_FEEDBACK)
            response = self._by_size[n] = pb.FeedbackBatchResponse(results=[result] * n)
        return response


class SyncEcho(pb_grpc.RouterServicer):
    def __init__(self, arms: int) -> None:
        self._route = canned_route(arms)
        self._batches = CannedBatches()

    def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:
        return self._route

    def Feedback(self, request: pb.FeedbackRequest, context: Any) -> pb.FeedbackResponse:
        return CANNED_FEEDBACK

    def FeedbackBatch(
        self, request: pb.FeedbackBatchRequest, context: Any
    ) -> pb.FeedbackBatchResponse:
        return self._batches(request)


class AioEcho(pb_grpc.RouterServicer):
    def __init__(self, arms: int) -> None:
        self._route = canned_route(arms)
        self._batches = CannedBatches()

    async def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:
        return self._route

    async def Feedback(self, request: pb.FeedbackRequest, context: Any) -> pb.FeedbackResponse:
        return CANNED_FEEDBACK

    async def FeedbackBatch(
        self, request: pb.FeedbackBatchRequest, context: Any
    ) -> pb.FeedbackBatchResponse:
        return self._batches(request)


def credentials(cert: str, key: str, client_ca: str) -> grpc.ServerCredentials | None:
    """TLS server credentials from PEM files (mTLS with `client_ca`); None for plaintext."""
    if not cert:
        return None
    ca = Path(client_ca).read_bytes() if client_ca else None
    pair = (Path(key).read_bytes(), Path(cert).read_bytes())
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=bool(ca))


def listen(
    server: grpc.Server | grpc.aio.Server, port: int, secure: grpc.ServerCredentials | None
) -> None:
    address = f"127.0.0.1:{port}"
    bound = server.add_secure_port(address, secure) if secure else server.add_insecure_port(address)
    if bound == 0:
        raise SystemExit(f"echo_server: cannot listen on {address}")


def serve_sync(
    port: int,
    arms: int,
    threads: int,
    secure: grpc.ServerCredentials | None = None,
    reuseport: bool = False,
) -> None:
    pool = futures.ThreadPoolExecutor(max_workers=threads)
    server = grpc.server(pool, options=_options(reuseport))
    pb_grpc.add_RouterServicer_to_server(SyncEcho(arms), server)  # type: ignore[no-untyped-call]
    listen(server, port, secure)
    server.start()
    print("echo_server: serving", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=0.5).wait()


async def serve_aio(
    port: int, arms: int, secure: grpc.ServerCredentials | None = None, reuseport: bool = False
) -> None:
    server = grpc.aio.server(options=_options(reuseport))
    pb_grpc.add_RouterServicer_to_server(AioEcho(arms), server)  # type: ignore[no-untyped-call]
    listen(server, port, secure)
    await server.start()
    print("echo_server: serving", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def _options(reuseport: bool) -> list[tuple[str, int]]:
    """Explicit either way (grpc's own default on Linux is to set SO_REUSEPORT)."""
    return [("grpc.so_reuseport", 1 if reuseport else 0)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server")
    parser.add_argument("--flavour", choices=("aio", "sync"), default="aio")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--arms", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8, help="sync flavour's thread pool")
    parser.add_argument("--tls-cert", default="", help="PEM certificate chain: listen with TLS")
    parser.add_argument("--tls-key", default="", help="PEM key of --tls-cert")
    parser.add_argument("--tls-client-ca", default="", help="mTLS: require clients signed by it")
    parser.add_argument("--reuseport", action="store_true", help="share the port (SO_REUSEPORT)")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        parser.error("--tls-cert and --tls-key go together; --tls-client-ca needs them")
    secure = credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
    if args.flavour == "sync":
        serve_sync(args.port, args.arms, args.threads, secure, args.reuseport)
    else:
        asyncio.run(serve_aio(args.port, args.arms, secure, args.reuseport))


if __name__ == "__main__":
    main()
