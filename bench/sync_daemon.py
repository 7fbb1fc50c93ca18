"""The daemon's own handlers on grpcio's sync server: an experiment, not a product path.

    python -m bench.sync_daemon --config FILE [--threads 8]

"echo sync" is the fastest bare grpcio server on our machines, so the bench asks whether the
daemon would be faster on it too. This process builds the daemon exactly as `banditd serve`
does (same config, Router, store, RouterService), then serves Route and Feedback from a
`grpc.server` thread pool. The service's coroutines are stepped to completion in the worker
thread: with the in-memory store and numeric features nothing in them ever suspends (a
suspension raises, so the numbers cannot silently come from a different path). One lock
serialises the steps (the GIL can switch threads in the middle of one), as the aio event loop
serialises handlers. No sweeper, health, reflection or Admin service, and no Redis or text
encoders: none of that would be acceptable in the product, which is why this lives in bench/.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Coroutine
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import load_settings
from banditd.logs import configure_logging
from banditd.server.app import build_daemon
from banditd.server.service import RouterService

T = TypeVar("T")


def run_to_completion(coro: Coroutine[Any, Any, T]) -> T:
    """The coroutine's result, if it finishes without suspending; else RuntimeError."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a handler suspended: this experiment needs the in-memory store")


class SyncRouter(pb_grpc.RouterServicer):
    def __init__(self, service: RouterService) -> None:
        self._service = service
        self._lock = threading.Lock()

    def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:
        with self._lock:
            return run_to_completion(self._service.Route(request, context))

    def Feedback(self, request: pb.FeedbackRequest, context: Any) -> pb.FeedbackResponse:
        with self._lock:
            return run_to_completion(self._service.Feedback(request, context))

    def FeedbackBatch(
        self, request: pb.FeedbackBatchRequest, context: Any
    ) -> pb.FeedbackBatchResponse:
        with self._lock:
            return run_to_completion(self._service.FeedbackBatch(request, context))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_daemon")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=8, help="as the echo sync flavour")
    args = parser.parse_args()
    settings = load_settings(args.config)
    configure_logging(settings.log_level, settings.log_format)
    # The daemon's own grpc.aio server is built (on an ephemeral port) but never started.
    spare = settings.server.model_copy(update={"listen": "127.0.0.1:0"})
    daemon = build_daemon(settings.model_copy(update={"server": spare}))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads))
    servicer = SyncRouter(RouterService(daemon.router, daemon.metrics))
    pb_grpc.add_RouterServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    if server.add_insecure_port(settings.server.listen) == 0:
        raise SystemExit(f"sync_daemon: cannot listen on {settings.server.listen}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=0.5).wait()


if __name__ == "__main__":
    main()
