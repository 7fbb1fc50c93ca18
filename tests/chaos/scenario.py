"""The chaos scenario: load on 2 replicas sharing one Redis while, in sequence,
(1) redis-server is SIGKILLed, Routes go on (degraded, buffered), it restarts from its AOF;
(2) Redis is frozen with CLIENT PAUSE ... ALL;
(3) one replica is SIGKILLed (Redis up, its outage buffer empty) and restarted on its port.
Then every reward is let finish and the store is compared with the ledger (report.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from tests.chaos.cluster import (
    LEARNING,
    NOT_SERVING,
    SERVING,
    LivenessWatch,
    Replica,
    aof_dir,
    durable_redis,
    wait_until,
)
from tests.chaos.load import GIVE_UP_S, Load
from tests.chaos.report import Report, read_store
from tests.integration.conftest import RedisServer

PAUSE_MS = 2000
LOAD_WAIT_S = 600.0  # bound on reaching a decision count (a loaded machine routes slowly)


async def run(
    target: int, workdir: Path, seed: int = 0, say: Callable[[str], None] = print
) -> Report:
    """Run the scenario with `target` decisions; processes' logs and configs go to `workdir`."""
    started = time.monotonic()
    with aof_dir(workdir) as data:
        redis = await asyncio.to_thread(durable_redis, data)
        replicas = [Replica(f"r{i}", workdir, redis.url, seed + i) for i in range(2)]
        load = Load(replicas, target, seed)
        watch = LivenessWatch(replicas, lambda: load.phase)
        tasks: list[asyncio.Task[None]] = []
        try:
            for replica in replicas:
                replica.start()
            for replica in replicas:
                await replica.wait_serving()
            tasks.append(asyncio.create_task(watch.run()))
            routing = asyncio.create_task(load.run())
            tasks.append(routing)
            learning_down = await faults(redis, replicas, load, say)
            load.release()
            await asyncio.wait_for(asyncio.shield(routing), LOAD_WAIT_S)
            durations = load.durations()
            say(f"{len(load.decisions)} decisions routed; waiting for every reward's answer")
            await load.drain(GIVE_UP_S + 60)
            watch.stop()
            await asyncio.wait_for(tasks[0], 30)
            metrics = {r.name: await recovered(r) for r in replicas}
            stored = await read_store(redis.url, load.decisions)
            exit_codes = {r.name: await r.stop() for r in replicas}
        except BaseException as exc:
            for replica in replicas:
                exc.add_note(f"--- {replica.log_path} (last lines)\n{replica.log_tail()}")
            raise
        finally:
            watch.stop()
            load.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for replica in replicas:
                await replica.stop()
                await replica.channel.close()
            redis.stop()
    return Report(
        target, load, stored, time.monotonic() - started, watch.answers, watch.not_serving,
        learning_down, metrics, exit_codes, durations,
    )  # fmt: skip


async def faults(
    redis: RedisServer, replicas: list[Replica], load: Load, say: Callable[[str], None]
) -> dict[str, bool]:
    """The three faults, each once the load reached its share of the decisions. Returns
    whether each replica's learning path went NOT_SERVING in the outage."""
    target = load.target
    enough = max(100, target // 50)  # Routes answered in each phase before it ends

    # (1) Redis SIGKILLed: both replicas keep routing (degraded) until each has answered
    # `enough` Routes and seen the outage; then it restarts from its AOF on the same port.
    await load.reached(target * 15 // 100, LOAD_WAIT_S)
    say(f"{len(load.decisions)} decisions: SIGKILL redis-server")
    load.enter("redis killed")
    await asyncio.to_thread(redis.kill)
    learning_down = {r.name: False for r in replicas}

    async def outage_seen() -> bool:
        for r in replicas:
            learning_down[r.name] = learning_down[r.name] or await r.check(LEARNING) == NOT_SERVING
        degraded = [s.degraded >= enough for s in load.routes["redis killed"].values()]
        return all(learning_down.values()) and all(degraded)

    await wait_until(outage_seen, "both replicas route degraded and report the outage")
    await asyncio.to_thread(redis.restart)
    load.enter("after the restart")
    for replica in replicas:
        await recovered(replica)

    # (2) Redis paused for every client (PAUSE_MS); the pausing client's next PING returns when
    # the pause is over.
    await load.reached(target * 45 // 100, LOAD_WAIT_S)
    say(f"{len(load.decisions)} decisions: CLIENT PAUSE {PAUSE_MS} ALL")
    client = aioredis.from_url(redis.url, socket_timeout=30)
    try:
        await client.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "ALL")  # type: ignore[no-untyped-call]
        load.enter("redis paused")
        await client.ping()
    finally:
        await client.aclose()
    load.enter("after the pause")
    for replica in replicas:
        await recovered(replica)

    # (3) One replica SIGKILLed while Redis is up and its outage buffer is empty (a buffer is
    # lost with its process: docs/redis.md); Routes fail over to the other one until it is back.
    await load.reached(target * 70 // 100, LOAD_WAIT_S)
    victim, survivor = replicas[1], replicas[0]
    await recovered(victim)
    say(f"{len(load.decisions)} decisions: SIGKILL {victim.name}")
    load.enter("replica killed")
    await asyncio.to_thread(victim.kill)

    async def failed_over() -> bool:
        stats = load.routes["replica killed"]
        return bool(stats[victim.name].failed) and stats[survivor.name].ok >= enough

    await wait_until(failed_over, f"Routes fail over from {victim.name} to {survivor.name}")
    victim.start()
    await victim.wait_serving()
    load.enter("after the replica restart")
    say(f"{len(load.decisions)} decisions: {victim.name} is back")

    async def back() -> bool:
        return load.routes["after the replica restart"][victim.name].ok >= enough

    await wait_until(back, f"{victim.name} routes again")
    return learning_down


async def recovered(replica: Replica) -> dict[str, float]:
    """Wait until `replica` reaches Redis and has flushed its outage buffer; its /metrics."""
    metrics: dict[str, float] = {}

    async def flushed() -> bool:
        nonlocal metrics
        with contextlib.suppress(OSError):
            metrics = await replica.metrics()
        return (
            metrics.get("banditd_store_up") == 1
            and metrics.get("banditd_outage_buffered") == 0
            and await replica.check(LEARNING) == SERVING
        )

    await wait_until(flushed, f"{replica.name} reaches Redis and flushes its outage buffer")
    return metrics
