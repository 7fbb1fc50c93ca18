"""A record that timed out may still land: one Route must not leave two pending decisions.

Route records its decision with record.lua. When Redis does not answer within timeout_s, the
store keeps the decision in its outage buffer under a buffered id (banditd/feedback/ids.py) and
answers that id. A Redis that was only frozen (SIGSTOP here; a stalled VM, a long fsync or a
slow script elsewhere) runs the timed-out command when it resumes, so the decision is also
pending under its plain id, which nobody holds. At its deadline the sweeper applied the default
reward to that copy: the Route was learned twice, the caller's reward under the buffered id and
the default reward under the plain one. Now the flush of a buffered decision drops its plain-id
copy.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from banditd.feedback import ids
from banditd.state.connection import RedisConnection, connect
from banditd.state.redis_store import RedisModelStore, RedisStoreParams
from banditd.types import ModelKey, ModelSpec, Outcome, PendingDecision
from tests.integration.conftest import start_redis


async def test_a_record_that_timed_out_but_landed_is_learned_once(tmp_path: Path) -> None:
    """Redis frozen while a decision is recorded: it gets a buffered id; after its reward and
    its deadline the model holds one update for it, not a second, default one."""
    proc, port = start_redis(tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    # 1 s: a frozen Redis takes that long to time out; one merely slowed by a loaded machine
    # must not (0.2 s failed under load)
    params = RedisStoreParams(timeout_s=1.0, retry_after_s=0.0)
    store = RedisModelStore(connect(RedisConnection(url, timeout_s=1.0)), params)
    spec = ModelSpec(dim=2, default_reward=0.0, fingerprint="f")
    now = time.time()

    def decision(hex_pair: str) -> PendingDecision:
        return PendingDecision(f"p:000-{hex_pair * 12}", "p", "", "a", np.array([1.0, 0.5]), 1.0, 0,
                               now, now + 60)  # fmt: skip

    try:
        await store.record(decision("cd"))  # the policy is known now: a record is one call
        assert (await store.settle("p:000-" + "cd" * 12, 1.0, now, spec)).outcome is Outcome.APPLIED
        proc.send_signal(signal.SIGSTOP)
        try:
            routed = await store.record(decision("ab"))
        finally:
            proc.send_signal(signal.SIGCONT)
        assert ids.buffered_at(routed) is not None  # Redis did not answer in time
        assert await store.ping()  # Redis answers again: the buffer is flushed
        assert (await store.settle(routed, 1.0, now + 1, spec)).outcome is Outcome.APPLIED
        expired = await store.expire(now + 61, 100, {"p": spec})
        learned = (await store.load(ModelKey("p"), ["a"], spec)).arms["a"].n
    finally:
        await store.close()
        proc.terminate()
        proc.wait(timeout=10)
    assert [s.decision_id for s in expired] == []
    assert learned == 2


@pytest.mark.parametrize("tag", ["000-", ""], ids=["tagged", "untagged"])
async def test_a_plain_copy_landing_after_the_flush_or_settled_before_it_is_never_learned_twice(
    tmp_path: Path, tag: str
) -> None:
    """The two orders record.lua closes: (1) the timed-out plain record lands after the
    buffered copy was flushed: the plain id's "superseded" tombstone stops it; (2) the plain
    copy's deadline passed and the sweeper settled it before the flush: that settlement stands
    and the buffered id answers as it (EXPIRED), so the decision is learned once. Untagged ids
    (issued before segment tags) too, whose plain copy the sweep moves to its segment's slot."""
    proc, port = start_redis(tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    store = RedisModelStore(connect(RedisConnection(url, timeout_s=1.0)), RedisStoreParams())
    spec = ModelSpec(dim=2, default_reward=0.0, fingerprint="f")
    now = time.time()

    def decision(decision_id: str, wait: float = 60.0) -> PendingDecision:
        return PendingDecision(decision_id, "p", "", "a", np.array([1.0, 0.5]), 1.0, 0, now,
                               now + wait)  # fmt: skip

    try:
        plain = f"p:{tag}" + "ab" * 12
        buffered = ids.buffered_id(plain, now)
        await store._record_one(decision(buffered))  # the flush
        await store._record_one(decision(plain))  # the late plain record: refused
        assert not await store.client.exists(store.keys.pending(plain))
        assert (await store.settle(buffered, 1.0, now, spec)).outcome is Outcome.APPLIED

        plain2 = f"p:{tag}" + "cd" * 12
        await store._record_one(decision(plain2, wait=1.0))  # landed; nobody holds it
        (defaulted,) = await store.expire(now + 2, 10, {"p": spec})
        assert defaulted.decision_id == plain2
        buffered2 = ids.buffered_id(plain2, now)
        await store._record_one(decision(buffered2, wait=1.0))  # the flush, too late
        late = await store.settle(buffered2, 1.0, now + 3, spec)
        assert late.outcome is Outcome.EXPIRED
        assert (await store.load(ModelKey("p"), ["a"], spec)).arms["a"].n == 2
    finally:
        await store.close()
        proc.terminate()
        proc.wait(timeout=10)
