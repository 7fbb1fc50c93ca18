"""The fields that tie a log line to its RPC: `rpc` and `request_id`.

The request id is the caller's x-request-id metadata, or a new id unique per process start
(pid + random) and counter. It is read only when a line is written: binding it for every call
(a server interceptor plus structlog contextvars) cost about 8% of the daemon's CPU under load
(docs/bench.md), and at the usual `warning` level nothing of a successful call is logged.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

_PREFIX = f"{os.getpid():x}{os.urandom(3).hex()}"
_COUNTER = itertools.count(1)


def request_id(context: Any) -> str:
    """x-request-id from the call's metadata, else a new id (context None: in-process calls)."""
    metadata = context.invocation_metadata() if context is not None else None
    for key, value in metadata or ():
        if key == "x-request-id" and value:
            return str(value)
    return f"{_PREFIX}-{next(_COUNTER):x}"


def request_fields(context: Any, rpc: str) -> dict[str, str]:
    return {"rpc": rpc, "request_id": request_id(context)}
