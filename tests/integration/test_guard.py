"""The guard around every handler: a small service of each kind and style, over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2

from banditd.errors import StateUnavailableError
from banditd.server.guard import MAX_STATUS_BYTES, Guard
from banditd.server.metrics import Metrics

# Any generated message with a string field 1 will do.
Request, Response = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
OK = Response(status=Response.SERVING)
GOOD = Request(service="ok").SerializeToString()
BAD_UTF8 = b"\x0a\x02\xc3\x28"
SERVICE = "test.Echo"


def check(request: Any) -> None:
    """What a handler does with a request: `boom` is a bug, `down` a domain error."""
    assert isinstance(request, Request)  # never an Undecodable
    if request.service == "boom":
        raise RuntimeError("boom")
    if request.service == "down":
        raise StateUnavailableError("store down")
    if request.service == "long":
        raise StateUnavailableError("x" * 900_000)


class Echo:
    """One OK response per request, in each kind and each grpc.aio style."""

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        check(request)
        return OK

    async def UnaryStreamYield(self, request: Any, context: Any) -> AsyncIterator[Any]:
        check(request)
        yield OK

    async def UnaryStreamWrite(self, request: Any, context: Any) -> None:
        check(request)
        await context.write(OK)

    async def StreamUnary(self, requests: AsyncIterator[Any], context: Any) -> Any:
        async for request in requests:
            check(request)
        return OK

    async def StreamStreamYield(self, requests: AsyncIterator[Any], context: Any) -> Any:
        async for request in requests:
            check(request)
            yield OK

    async def StreamStreamWrite(self, requests: AsyncIterator[Any], context: Any) -> None:
        async for request in requests:
            check(request)
            await context.write(OK)


KINDS = {  # method -> (request streaming, response streaming)
    "UnaryUnary": (False, False),
    "UnaryStreamYield": (False, True),
    "UnaryStreamWrite": (False, True),
    "StreamUnary": (True, False),
    "StreamStreamYield": (True, True),
    "StreamStreamWrite": (True, True),
}
FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_echo(servicer: Any, server: Any) -> None:
    """As grpcio 1.75's generated add_*Servicer_to_server does it."""
    handlers = {
        method: FACTORIES[kind](
            getattr(servicer, method),
            request_deserializer=Request.FromString,
            response_serializer=Response.SerializeToString,
        )
        for method, kind in KINDS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    server.add_registered_method_handlers(SERVICE, handlers)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[grpc.aio.Channel, Metrics]]:
    server = grpc.aio.server()
    metrics = Metrics()
    Guard(server, metrics).add(add_echo, Echo())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, metrics
    await server.stop(None)


async def call(
    channel: grpc.aio.Channel, method: str, *raw: bytes
) -> tuple[grpc.StatusCode, str, int]:
    """Send raw request bytes (all of them for a streaming request, else the first); the
    status, its message and how many responses came before it."""
    streaming_request, streaming_response = KINDS[method]
    path = f"/{SERVICE}/{method}"
    requests: Iterator[bytes] = iter(raw)
    responses = 0
    rpc: Any
    if streaming_request:
        rpc = (channel.stream_stream if streaming_response else channel.stream_unary)(path)
        c = rpc(requests)
    else:
        rpc = (channel.unary_stream if streaming_response else channel.unary_unary)(path)
        c = rpc(raw[0])
    try:
        if streaming_response:
            async for response in c:
                assert Response.FromString(response) == OK
                responses += 1
        else:
            assert Response.FromString(await c) == OK
            responses = 1
    except grpc.aio.AioRpcError:
        pass
    return await c.code(), await c.details() or "", responses


@pytest.mark.parametrize("method", KINDS)
async def test_guarded_handlers_keep_their_kind_and_style(echo, method: str) -> None:
    """Good requests get their responses, streamed or not, as without the guard."""
    channel, _ = echo
    code, _, responses = await call(channel, method, GOOD, GOOD)
    assert code is grpc.StatusCode.OK
    assert responses == (2 if KINDS[method] == (True, True) else 1)


@pytest.mark.parametrize("method", KINDS)
async def test_undecodable_request_is_invalid_argument_in_every_kind(echo, method: str) -> None:
    """Bad bytes are INVALID_ARGUMENT naming the message type; a stream's good requests
    before them are answered first; the refusal is counted."""
    channel, metrics = echo
    code, details, responses = await call(channel, method, GOOD, BAD_UTF8)
    if not KINDS[method][0]:
        code, details, responses = await call(channel, method, BAD_UTF8)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid grpc.health.v1.HealthCheckRequest" in details
    assert responses == (1 if KINDS[method] == (True, True) else 0)
    sample = metrics.registry.get_sample_value
    assert sample("banditd_rpc_requests_total", {"rpc": method, "code": "INVALID_ARGUMENT"}) == 1


@pytest.mark.parametrize("method", KINDS)
async def test_unexpected_exception_is_internal_in_every_kind(echo, method: str) -> None:
    """A bug is INTERNAL saying so, logged as rpc.failed with its request id, and counted."""
    channel, metrics = echo
    boom = Request(service="boom").SerializeToString()
    with structlog.testing.capture_logs() as logs:
        code, details, _ = await call(channel, method, boom)
    assert code is grpc.StatusCode.INTERNAL
    assert "RuntimeError" in details
    assert "bug in banditd" in details
    [line] = [e for e in logs if e["event"] == "rpc.failed"]
    assert line["rpc"] == method
    assert f"request id {line['request_id']}" in details
    assert metrics.registry.get_sample_value("banditd_rpc_failures_total", {"rpc": method}) == 1


@pytest.mark.parametrize("method", KINDS)
async def test_escaped_domain_error_gets_its_status_from_the_table(echo, method: str) -> None:
    """A BanditdError a handler did not catch maps like any other: UNAVAILABLE, not a bug."""
    channel, metrics = echo
    code, details, _ = await call(channel, method, Request(service="down").SerializeToString())
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "store down")
    assert metrics.registry.get_sample_value("banditd_rpc_failures_total", {"rpc": method}) is None


async def test_long_status_message_is_capped(echo) -> None:
    """A 900 KB message leaves capped (not RESOURCE_EXHAUSTED on the status metadata)."""
    channel, _ = echo
    code, details, _ = await call(
        channel, "UnaryUnary", Request(service="long").SerializeToString()
    )
    assert code is grpc.StatusCode.UNAVAILABLE
    assert MAX_STATUS_BYTES < len(details.encode()) < MAX_STATUS_BYTES + 40
    assert details.endswith("... [900,000 characters]")


async def test_guard_refuses_what_it_cannot_wrap() -> None:
    """A sync handler, or a service registered only through a generic handler, fails at
    startup rather than going unguarded."""

    class Sync:
        def UnaryUnary(self, request: Any, context: Any) -> Any:
            return OK

    def add_sync(servicer: Any, server: Any) -> None:
        handler = grpc.unary_unary_rpc_method_handler(servicer.UnaryUnary)
        server.add_registered_method_handlers(SERVICE, {"UnaryUnary": handler})

    def add_generic_only(servicer: Any, server: Any) -> None:
        handler = grpc.unary_unary_rpc_method_handler(servicer.UnaryUnary)
        generic = grpc.method_handlers_generic_handler(SERVICE, {"UnaryUnary": handler})
        server.add_generic_rpc_handlers((generic,))

    with pytest.raises(TypeError, match="async"):
        Guard(grpc.aio.server(), Metrics()).add(add_sync, Sync())
    with pytest.raises(RuntimeError, match="only a generic handler"):
        Guard(grpc.aio.server(), Metrics()).add(add_generic_only, Echo())
