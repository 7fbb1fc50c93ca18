"""BatchingEncoder: the async face of a text encoder, for the hot path.

- Off the event loop: encoder runs go to a ThreadPoolExecutor of `workers` threads; at most
  `workers` runs are in flight, so the pool (and onnxruntime's threads) stays bounded.
- Micro-batching: a request waits at most `max_wait_ms` for others; a batch of `max_batch`
  goes at once. While all workers are busy, arrivals queue and leave together as the next
  batch(es), so batches grow with load and an idle daemon adds at most max_wait_ms.
- Cache: an LRU of `cache_size` embeddings keyed by the BLAKE2b-128 of the text (UTF-8);
  identical texts in flight share one encoding.
The encoder is any object with `encode(Sequence[str]) -> float32 [B, E]`; results are
identical to single runs (checked in tests): pooling is masked, so padding in a batch does not
change a row.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Embedding = npt.NDArray[np.float32]


class BatchEncoder(Protocol):
    dim: int
    fingerprint: str

    def encode(self, texts: Sequence[str]) -> Embedding: ...


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    workers: int = 1
    max_batch: int = 16
    max_wait_ms: float = 0.0
    cache_size: int = 10_000

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_batch < 1 or self.max_wait_ms < 0 or self.cache_size < 0:
            raise ValueError(f"invalid batching options {self}")


@dataclass(frozen=True, slots=True)
class BatcherStats:
    requests: int
    cache_hits: int
    runs: int
    texts_encoded: int


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class BatchingEncoder:
    """Async, cached, micro-batched access to one encoder; one instance per encoder per process."""

    def __init__(self, encoder: BatchEncoder, options: BatchingOptions = BatchingOptions()) -> None:
        self.encoder = encoder
        self.options = options
        self._pool = ThreadPoolExecutor(options.workers, thread_name_prefix="banditd-encoder")
        self._cache: OrderedDict[bytes, Embedding] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[Embedding]] = {}
        self._queue: list[tuple[bytes, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._requests = self._hits = self._runs = self._encoded = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    @property
    def stats(self) -> BatcherStats:
        return BatcherStats(self._requests, self._hits, self._runs, self._encoded)

    async def embed(self, text: str) -> Embedding:
        """The text's unit vector (read-only array of length dim)."""
        self._requests += 1
        key = text_key(text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self._hits += 1
            return cached
        future = self._inflight.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            future.add_done_callback(_consume)
            self._inflight[key] = future
            self._queue.append((key, text))
            if len(self._queue) >= self.options.max_batch:
                self._dispatch()
            elif self._timer is None:
                self._timer = loop.call_later(self.options.max_wait_ms / 1e3, self._on_timer)
        return await asyncio.shield(future)

    async def embed_many(self, texts: Sequence[str]) -> list[Embedding]:
        return list(await asyncio.gather(*(self.embed(t) for t in texts)))

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _dispatch(self) -> None:
        if self._timer is not None and len(self._queue) >= self.options.max_batch:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while self._queue and self._busy < self.options.workers:
            batch = self._queue[: self.options.max_batch]
            del self._queue[: self.options.max_batch]
            self._busy += 1
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[bytes, str]]) -> None:
        loop = asyncio.get_running_loop()
        texts = [text for _, text in batch]
        try:
            out = await loop.run_in_executor(self._pool, self.encoder.encode, texts)
        except Exception as exc:  # noqa: BLE001  (handed to every waiter; encoders raise BanditdError)
            for key, _ in batch:
                future = self._inflight.pop(key)
                if not future.done():
                    future.set_exception(exc)
        else:
            self._runs += 1
            self._encoded += len(batch)
            for i, (key, _) in enumerate(batch):
                row = out[i].copy()
                row.flags.writeable = False
                self._remember(key, row)
                future = self._inflight.pop(key)
                if not future.done():
                    future.set_result(row)
        finally:
            self._busy -= 1
            if self._queue:
                self._dispatch()

    def _remember(self, key: bytes, row: Embedding) -> None:
        if self.options.cache_size == 0:
            return
        self._cache[key] = row
        if len(self._cache) > self.options.cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _consume(future: asyncio.Future[Embedding]) -> None:
    """Mark an exception as retrieved when every waiter was cancelled (no loop warning)."""
    if not future.cancelled():
        future.exception()
