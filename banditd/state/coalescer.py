"""Coalescer: the store's hot commands of concurrent calls, sent as one pipeline per loop turn.

Without it every Route costs two Redis round trips and every Feedback one, each through
redis-py's asyncio client, which spends about 100 µs of Python per call (connection pool, retry
wrapper, observability hooks, a read per reply) where the scripts' own work in Redis is tens of
µs. With 64 calls in flight, many of them send a command in the same event-loop turn. As
auto-pipelining clients do (ioredis `enableAutoPipelining`, Lettuce), a command here is queued
with a future, and the first one queued in a turn schedules a flush for the next turn: one
write carries every queued command, as a pipeline (not a transaction: each script stays atomic
on its own, as before), and replies are handed to the futures in order as they arrive.

One pipeline is in flight at a time: commands queued while one is answered wait for its last
reply, then leave together with those its callers send next (a flush scheduled then runs after
the tasks its replies woke). Redis runs one command at a time anyway, so they lose at most
that round trip's latency, and under load a pipeline carries several Route+Feedbacks' commands
where a flush per loop turn carried one or two (the daemon's gRPC events arrive a few per
turn): fewer round trips, and less CPU on both sides (docs/redis.md, "Coalescing").

- One dedicated connection per store (one socket, one read callback): no pool, no per-call
  task. hiredis packs the commands (RESP) and parses the replies. (redis-py's own pipeline
  object costs about 30 µs per command and sends SCRIPT EXISTS before each pipeline that holds
  a script; this path about 10: docs/redis.md, "Coalescing".)
- An error reply fails only its caller. NOSCRIPT (Redis restarted or SCRIPT FLUSH) is answered
  by sending that one call again as EVAL, which also caches the script again.
- A connection failure fails every command in flight on it with redis-py's ConnectionError;
  no reply for `timeout_s` while commands are in flight closes the connection and fails them
  with redis-py's TimeoutError, as redis-py's `socket_timeout` would. The store translates both
  as it does for a call without coalescing (fail fast, degraded load, outage buffer). Nothing is
  retried here: a command whose reply was lost may have run, and the store's callers already
  handle that (a record retried or buffered meets record.lua's tombstone check, a settle
  retried answers DUPLICATE). The next command opens a fresh connection.
- A caller cancelled while waiting (a gRPC deadline) leaves its reply to be read and dropped:
  the connection stays in step, unlike cancelling redis-py in the middle of a read.
- Redis Cluster: `ClusterCoalescer` sends each flush as one redis-py ClusterPipeline, which
  splits it by node and follows MOVED/ASK; a flush then costs one round trip per node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int | float


class Script(Protocol):
    """What a coalescer needs of a script: redis-py's `Script` has both."""

    sha: str
    script: bytes | str | memoryview


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP2 (an array of bulk strings), packed by hiredis in C: about a third
    of what the same loop in Python costs (a record.lua call has about 40 arguments)."""
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]  # (stub: 1-tuple)
    return packed


class FlushCounts(Protocol):
    """Where a coalescer counts: flushes, pipelines sent (one network write each, or one per
    node on a Cluster); flushed_commands, the commands they carried."""

    flushes: int
    flushed_commands: int


class CoalescerStats:
    __slots__ = ("flushed_commands", "flushes")

    def __init__(self) -> None:
        self.flushes = 0
        self.flushed_commands = 0


class _Wire(asyncio.Protocol):
    """One connection: replies are matched to waiting futures in the order commands went out.
    `on_batch()` runs when the last reply of a pipeline has been handed out, `on_lost(exc)`
    when the connection fails."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = hiredis.Reader(replyError=ResponseError)
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.batches: deque[int] = deque()  # replies still due, per pipeline in flight
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.progress = loop.time()  # last reply (or first command sent to an idle wire)
        self.on_batch: Callable[[], None] | None = None
        self.on_lost: Callable[[Exception], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiters, batches = self._reader, self.waiters, self.batches
        reader.feed(data)
        completed = False
        try:
            while (reply := reader.gets()) is not False:
                future = waiters.popleft()
                if batches[0] == 1:
                    batches.popleft()
                    completed = True
                else:
                    batches[0] -= 1
                if future.done():  # its caller was cancelled: the reply is dropped
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(BaseParser.parse_error(str(reply)))  # type: ignore[no-untyped-call]
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(RedisConnectionError(f"redis reply out of step: {exc!r}"))
            return
        self.progress = self._loop.time()
        if completed and self.on_batch is not None:
            self.on_batch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to redis lost: {exc!r}"))

    def send(self, data: bytes, futures: list[asyncio.Future[Any]]) -> None:
        if not self.waiters:
            self.progress = self._loop.time()
        self.waiters.extend(futures)
        self.batches.append(len(futures))
        assert self.transport is not None
        self.transport.write(data)

    def fail(self, exc: Exception) -> None:
        """Close the connection; every command still waiting gets `exc`."""
        if self.lost:
            return
        self.lost = True
        if self.transport is not None:
            self.transport.abort()
        waiters, self.waiters = self.waiters, deque()
        self.batches.clear()
        for future in waiters:
            if not future.done():
                future.set_exception(exc)
        if self.on_lost is not None:
            self.on_lost(exc)


class Coalescer:
    """Pipelines the commands queued in one event-loop turn over one connection (single node).

    host, port, db, username, password and TLS come from the redis-py client's connection
    settings (the URL and connect()'s options), so both paths reach the same server as the
    same user."""

    def __init__(self, client: Redis, timeout_s: float, stats: FlushCounts | None = None) -> None:
        pool = client.connection_pool
        settings = pool.connection_class(**pool.connection_kwargs)  # a template, never connected
        self._host: str = getattr(settings, "host", "127.0.0.1")
        self._port: int = int(getattr(settings, "port", 6379))
        self._db = int(settings.db or 0)
        self._username: str | None = settings.username
        self._password: str | None = settings.password
        self._ssl = settings.ssl_context.get() if isinstance(settings, SSLConnection) else None
        self._check_hostname = bool(self._ssl is not None and self._ssl.check_hostname)
        self._timeout_s = timeout_s
        self.stats: FlushCounts = stats if stats is not None else CoalescerStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wire: _Wire | None = None
        self._opening: asyncio.Task[None] | None = None
        self._data: list[bytes] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # -- callers ---------------------------------------------------------------------------
    def execute(self, *args: Arg) -> asyncio.Future[Any]:
        """Queue one command; the future gets its reply (or its error)."""
        return self._queue(pack(args))

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """EVALSHA, and once more as EVAL if Redis does not hold the script (NOSCRIPT)."""
        try:
            return await self._queue(pack(("EVALSHA", script.sha, len(keys), *keys, *args)))
        except NoScriptError:
            body = bytes(script.script) if isinstance(script.script, memoryview) else script.script
            return await self._queue(pack(("EVAL", body, len(keys), *keys, *args)))

    def _queue(self, data: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (tests): start afresh
            self._loop, self._wire, self._opening, self._timer = loop, None, None, None
            self._data, self._futures, self._scheduled = [], [], False
        if self._closed:
            raise RedisConnectionError("the store is closed")
        future: asyncio.Future[Any] = loop.create_future()
        self._data.append(data)
        self._futures.append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    # -- the flush -------------------------------------------------------------------------
    def _flush(self) -> None:
        self._scheduled = False
        if not self._futures:
            return
        wire = self._wire
        if wire is None or wire.lost:
            self._wire = None
            if self._opening is None:
                assert self._loop is not None
                self._opening = self._loop.create_task(self._open())
            return  # _open flushes the queue once connected, or fails it
        if wire.batches:  # one pipeline at a time: the next one leaves when it is answered
            return
        data, futures = self._data, self._futures
        self._data, self._futures = [], []
        wire.send(b"".join(data), futures)
        self.stats.flushes += 1
        self.stats.flushed_commands += len(futures)
        if self._timer is None:
            assert self._loop is not None
            self._timer = self._loop.call_at(wire.progress + self._timeout_s, self._check)

    def _check(self) -> None:
        """No reply for timeout_s while commands wait: the connection is given up."""
        self._timer = None
        wire = self._wire
        if wire is None or not wire.waiters:
            return
        assert self._loop is not None
        due = wire.progress + self._timeout_s
        if self._loop.time() >= due:
            wire.fail(RedisTimeoutError(f"no reply from redis within {self._timeout_s} s"))
        else:
            self._timer = self._loop.call_at(due, self._check)

    async def _open(self) -> None:
        try:
            wire = await self._connect()
        except Exception as exc:  # noqa: BLE001 - every queued caller gets it, translated
            error = exc
            if not isinstance(exc, RedisConnectionError | RedisTimeoutError):
                error = RedisConnectionError(f"cannot connect to redis: {exc!r}")
            futures, self._data, self._futures = self._futures, [], []
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        else:
            wire.on_batch = self._answered
            wire.on_lost = self._lost
            self._wire = wire
            self._flush()
        finally:
            self._opening = None

    def _answered(self) -> None:
        """A pipeline was answered: the commands queued meanwhile leave, with those its callers
        send next (their tasks were woken first, so they run before this flush)."""
        if self._futures and not self._scheduled:
            assert self._loop is not None
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _lost(self, exc: Exception) -> None:
        """The connection failed: the commands held back for it fail as its pipeline did."""
        self._wire = None
        futures, self._data, self._futures = self._futures, [], []
        for future in futures:
            if not future.done():
                future.set_exception(exc)

    async def _connect(self) -> _Wire:
        """A new connection, authenticated and on the right db, within timeout_s."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout_s):
                _, wire = await loop.create_connection(
                    lambda: _Wire(loop), self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._check_hostname else None,
                )  # fmt: skip
                handshake = []
                if self._password is not None:
                    user = () if self._username is None else (self._username,)
                    handshake.append(("AUTH", *user, self._password))
                if self._db:
                    handshake.append(("SELECT", self._db))
                if handshake:
                    futures = [loop.create_future() for _ in handshake]
                    wire.send(b"".join(pack(cmd) for cmd in handshake), futures)
                    try:
                        for future in futures:
                            await future
                    except ResponseError as exc:
                        wire.fail(RedisConnectionError("closed"))
                        raise AuthenticationError(f"redis refused the handshake: {exc}") from exc
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no connection to redis within {self._timeout_s} s") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to redis: {exc!r}") from exc
        return wire

    async def aclose(self) -> None:
        """Fail whatever is queued, close the connection."""
        self._closed = True
        error = RedisConnectionError("the store is closed")
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(BaseException):
                await self._opening
        if self._wire is not None:
            self._wire.fail(error)
            self._wire = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        futures, self._data, self._futures = self._futures, [], []
        for future in futures:
            if not future.done():
                future.set_exception(error)


class ClusterCoalescer:
    """The same queue over a Redis Cluster: each flush is one redis-py ClusterPipeline
    (transaction=False), which groups the commands by node (one round trip per node) and
    follows MOVED/ASK. Errors come back per command (raise_on_error=False), so one caller's
    error, or one node's failure, fails only the commands it concerns."""

    def __init__(self, client: RedisCluster, stats: FlushCounts | None = None) -> None:
        self._client = client
        self.stats: FlushCounts = stats if stats is not None else CoalescerStats()
        self._queue: list[tuple[tuple[Arg, ...], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def execute(self, *args: Arg) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((args, future))
        return future

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            body = bytes(script.script) if isinstance(script.script, memoryview) else script.script
            return await self.execute("EVAL", body, len(keys), *keys, *args)

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[tuple[Arg, ...], asyncio.Future[Any]]]) -> None:
        self.stats.flushes += 1
        self.stats.flushed_commands += len(batch)
        pipe = self._client.pipeline(transaction=False)
        for args, _ in batch:
            pipe.execute_command(*args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - the whole flush failed: each caller gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
