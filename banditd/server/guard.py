"""The outer guard of every RPC on every service the server exposes.

`Guard` stands in for the grpc.aio server in the generated `add_*Servicer_to_server(servicer,
server)` functions, which hand it each service's method-handler dict (grpcio 1.75's code calls
`add_generic_rpc_handlers` and then `add_registered_method_handlers` with the same dict). It
registers every handler re-wrapped, with the same kind (unary or streaming request and
response) and the same style (coroutine, or async generator):

- The deserializer never raises: bytes protobuf cannot parse become an `Undecodable`, and the
  wrapper answers it with INVALID_ARGUMENT, for a streaming request when the request iterator
  reaches it. grpcio alone answers UNKNOWN "Unexpected DecodeError".
- A `BanditdError` that escapes a handler gets its status from the one table (`status_for`).
- Any other exception is a bug: logged with its traceback (`rpc.failed`), counted
  (`banditd_rpc_failures_total{rpc}`) and answered INTERNAL, naming the request id.

Every status message leaves through `abort`, which caps it at MAX_STATUS_BYTES: grpcio refuses
status metadata over 16 KiB, so a client would see RESOURCE_EXHAUSTED instead of the error.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import structlog

from banditd.errors import (
    ECHO_CHARS,
    BanditdError,
    ConfigError,
    DecisionNotFoundError,
    FailedPreconditionError,
    InvalidRequestError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StateUnavailableError,
    UnauthenticatedError,
    clipped,
)
from banditd.server.auth import CALLER, Authorizer, policies_of
from banditd.server.metrics import Metrics
from banditd.server.request_log import request_fields, request_id

log = structlog.get_logger("banditd.rpc")

MAX_STATUS_BYTES = 1000  # UTF-8 bytes of a status message, before grpc's percent-encoding

_STATUS: dict[type[BanditdError], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    DecisionNotFoundError: grpc.StatusCode.NOT_FOUND,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    StateUnavailableError: grpc.StatusCode.UNAVAILABLE,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
}

_KINDS = {  # (request_streaming, response_streaming) -> the factory grpc's generated code uses
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}

Ctx = grpc.aio.ServicerContext[Any, Any]


def status_for(exc: BanditdError) -> grpc.StatusCode:
    """The most specific mapped class in the exception's MRO wins."""
    return next((_STATUS[t] for t in type(exc).__mro__ if t in _STATUS), grpc.StatusCode.INTERNAL)


def status_message(message: str) -> str:
    """`message`, or its first MAX_STATUS_BYTES bytes of UTF-8 marked with its full length."""
    if len(message) <= MAX_STATUS_BYTES // 4:  # 4 bytes a character at most: no need to encode
        return message
    raw = message.encode("utf-8", "backslashreplace")
    if len(raw) <= MAX_STATUS_BYTES:
        return message
    head = raw[:MAX_STATUS_BYTES].decode("utf-8", "ignore")
    return f"{head}... [{len(message):,} characters]"


async def abort(context: Ctx, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the RPC with `code` and `message` (capped by `status_message`)."""
    await context.abort(code, status_message(message))
    raise AssertionError("unreachable")  # context.abort always raises


async def abort_with(context: Ctx, exc: BanditdError) -> NoReturn:
    """End the RPC with the status the error table gives `exc`, and its message."""
    await abort(context, status_for(exc), str(exc))


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Request bytes protobuf could not parse; the guard answers INVALID_ARGUMENT."""

    error: str


def parser(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserializer` (a message class's `FromString`), but bytes it cannot parse become an
    `Undecodable` naming the message type."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = descriptor.full_name if descriptor is not None else "request message"

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # noqa: BLE001  (DecodeError, or anything: the bytes are unusable)
            return Undecodable(
                f"the request is not a valid {name}: protobuf could not parse its {len(raw)}"
                " bytes (string fields must be valid UTF-8)"
            )

    return parse


class Guard:
    """Registers services on a grpc.aio server with every method handler guarded.

    Pass it as the server to a generated `add_*Servicer_to_server`, or use `add`. Handlers must
    be coroutine functions or async generator functions (grpc.aio style); a streaming-request
    handler must read its requests from the request iterator (one that calls `context.read()`
    would see an `Undecodable` itself).
    """

    def __init__(
        self, server: grpc.aio.Server, metrics: Metrics, authorizer: Authorizer | None = None
    ) -> None:
        self._server = server
        self._metrics = metrics
        self._auth = authorizer or Authorizer([], {}, {})
        self._services: set[str] = set()
        self._unwrapped: set[str] = set()  # seen only through add_generic_rpc_handlers so far
        self._audited: set[str] = set()

    def add(
        self, add_servicer: Callable[[Any, Any], None], servicer: object, audit: str = ""
    ) -> None:
        """`add_servicer(servicer, self)`, checking that every handler it gave was guarded.
        audit: this service's name, to log and count every call to it (Admin)."""
        if audit:
            self._audited.add(audit)
        add_servicer(servicer, self)
        if self._unwrapped:
            raise RuntimeError(
                f"{sorted(self._unwrapped)} registered only a generic handler, which the guard"
                " cannot unwrap: pass the method handlers to add_registered_method_handlers"
            )

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Noted, not registered: the generated code also passes the same method handlers to
        `add_registered_method_handlers`, which registers them guarded (and as generic)."""
        for handler in handlers:
            name = getattr(handler, "service_name", None)
            if name is None:
                raise TypeError(f"cannot guard {handler!r}: it names no service")
            if name() not in self._services:
                self._unwrapped.add(name())

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._unwrapped.discard(service)
        if service in self._services:  # grpcio 1.75's generated code registers each one twice
            return
        self._services.add(service)
        guarded = {
            method: self._guarded(f"/{service}/{method}", h, service in self._audited)
            for method, h in handlers.items()
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, guarded),)
        )
        self._server.add_registered_method_handlers(service, guarded)

    def _guarded(self, path: str, handler: grpc.RpcMethodHandler[Any, Any], audited: bool) -> Any:
        behaviour = (
            handler.unary_unary or handler.unary_stream or handler.stream_unary
            or handler.stream_stream
        )  # fmt: skip
        kind = (handler.request_streaming, handler.response_streaming)
        wrapped = self._wrap(path, behaviour, handler.request_streaming)
        return _KINDS[kind](
            self._audit(path, wrapped) if audited else wrapped,
            request_deserializer=parser(handler.request_deserializer or _raw),
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, path: str, behaviour: Any, streaming: bool) -> Any:
        """`behaviour` in the same style, with Undecodable requests refused, the caller
        authorised (before the handler runs: a refused call changes nothing) and errors mapped."""
        method = path.rsplit("/", 1)[-1]
        if inspect.isasyncgenfunction(behaviour):

            async def stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
                try:
                    if streaming:
                        request = self._decoded(method, request, context)
                    elif isinstance(request, Undecodable):
                        await self._refuse(method, context, request)
                    self._auth.check(path, None if streaming else request, context)
                    async for response in behaviour(request, context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001  (the last resort: see _failed)
                    await self._failed(method, context, exc)

            return stream
        if not inspect.iscoroutinefunction(behaviour):
            raise TypeError(f"{method}: {behaviour!r} is not a grpc.aio (async) handler")

        async def call(request: Any, context: Ctx) -> Any:
            try:
                if streaming:
                    request = self._decoded(method, request, context)
                elif isinstance(request, Undecodable):
                    await self._refuse(method, context, request)
                self._auth.check(path, None if streaming else request, context)
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001  (the last resort: see _failed)
                await self._failed(method, context, exc)

        return call

    def _audit(self, path: str, call: Any) -> Any:
        """One `admin.audit` line and one count per call: who, what, which policy, result."""
        method = path.rsplit("/", 1)[-1]

        async def audited(request: Any, context: Ctx) -> Any:
            code = grpc.StatusCode.OK
            try:
                return await call(request, context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                caller = CALLER.get()
                policies = (
                    [] if isinstance(request, Undecodable) else sorted(policies_of(path, request))
                )
                self._metrics.admin_calls.labels(method, code.name).inc()
                log.info(
                    "admin.audit", rpc=method, code=code.name,
                    caller=caller.name if caller else None, peer=context.peer(),
                    policy=clipped(",".join(policies), ECHO_CHARS) if policies else None,
                    request_id=request_id(context),
                )  # fmt: skip

        return audited

    async def _decoded(
        self, method: str, requests: AsyncIterator[Any], context: Ctx
    ) -> AsyncIterator[Any]:
        """The request iterator, refusing the RPC at the first Undecodable request."""
        async for request in requests:
            if isinstance(request, Undecodable):
                await self._refuse(method, context, request)
            yield request

    async def _refuse(self, method: str, context: Ctx, request: Undecodable) -> NoReturn:
        """INVALID_ARGUMENT, counted (latency not measured) and logged as the RPC's one line."""
        code = grpc.StatusCode.INVALID_ARGUMENT
        self._metrics.hot.rpc(method, code.name, 0.0)
        log.warning(
            "rpc.completed", **request_fields(context, method), code=code.name, error=request.error
        )
        await abort(context, code, request.error)

    async def _failed(self, method: str, context: Ctx, exc: Exception) -> NoReturn:
        """A BanditdError gets its status from the table; anything else is a bug: INTERNAL,
        counted (also as a request of that code: latency not measured) and logged."""
        if isinstance(exc, BanditdError):
            self._metrics.hot.rpc(method, status_for(exc).name, 0.0)
            await abort_with(context, exc)
        rid = request_id(context)
        self._metrics.hot.rpc(method, grpc.StatusCode.INTERNAL.name, 0.0)
        self._metrics.rpc_failures.labels(method).inc()
        log.exception("rpc.failed", rpc=method, request_id=rid, exc_info=exc)
        await abort(
            context,
            grpc.StatusCode.INTERNAL,
            f"internal error ({type(exc).__name__}): this is a bug in banditd; please report it"
            f" with request id {clipped(rid, ECHO_CHARS)}",
        )


def _raw(data: bytes) -> bytes:
    """The deserializer of a handler that takes raw bytes."""
    return data
