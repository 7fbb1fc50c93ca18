"""Server interceptors: bind rpc + request_id so every log line of an RPC carries them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

# Request ids for calls without x-request-id: unique per process start (pid + random) and
# counter; cheaper than uuid4 on the hot path.
_PREFIX = f"{os.getpid():x}{os.urandom(3).hex()}"
_COUNTER = itertools.count(1)


class LogContextInterceptor(grpc.aio.ServerInterceptor):
    """Binds `rpc` and `request_id` (from x-request-id metadata, or a new one)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        metadata: dict[str, Any] = dict(handler_call_details.invocation_metadata or ())
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            rpc=handler_call_details.method.rsplit("/", 1)[-1],
            request_id=metadata.get("x-request-id") or f"{_PREFIX}-{next(_COUNTER):x}",
        )
        return await continuation(handler_call_details)
