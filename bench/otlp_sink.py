"""An OTLP/gRPC trace receiver standing in for a collector: counts spans, keeps nothing.

    python -m bench.otlp_sink --port PORT

After each export it prints `spans <total so far>` (flushed), so the bench reads the total from
its output. What a real collector does with the spans (batching, sending on) is not banditd's
cost and is not measured; the daemon's side (span creation, the batch processor, protobuf
encoding, the gRPC export) is.
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc


class Sink(otlp_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(self, request: otlp.ExportTraceServiceRequest, context: Any) -> Any:
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._lock:
            self.spans += count
            print(f"spans {self.spans}", flush=True)
        return otlp.ExportTraceServiceResponse()


def spans_received(output: str) -> int:
    """The last total a sink printed (0 if none)."""
    lines = [line for line in output.splitlines() if line.startswith("spans ")]
    return int(lines[-1].split()[1]) if lines else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    otlp_grpc.add_TraceServiceServicer_to_server(Sink(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=0.5).wait()


if __name__ == "__main__":
    main()
