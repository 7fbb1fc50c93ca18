"""The key layout's migration, and decisions still pending under untagged ids.

Before segment tags every key of a policy lived in the policy's own slot `{<policy>}` (the
*legacy* slot, banditd/state/keys.py) and decision ids were `<policy>:<hex>`. Now each segment's
state lives in the slot of its tag. A store reaching a Redis whose `<prefix>:layout` is not
"segment" migrates it before its first other call (`Layout.ensure`), under a lock
(`SET <prefix>:layout-lock <token> NX PX`) so that replicas starting together migrate once; the
others wait for `<prefix>:layout` (the watcher's ping up to LAYOUT_WAIT_S; any other call
answers UNAVAILABLE meanwhile, as in an outage: Routes degraded, records buffered). Per policy:

1. index.lua indexes state older than the segment registry (as before);
2. each segment's version, fingerprint, stamps, sums and index move to its slot: copied
   (idempotent: the same values again after a crash), then forgotten in the legacy slot; the
   slot's apply counter "c" is raised to the legacy counter, so no stamp repeats;
3. the registry (`{<policy>}:segments`) and the arm list stay where they are.

Every step is idempotent, so a migration cut short (crash, lock expired, Redis gone) is simply
run again; `<prefix>:layout` is set last. Nothing else writes the per-segment slots before it is
set (every store waits for it), so copying cannot overwrite newer state.

Decisions pending under untagged ids stay in the legacy slot with their tombstones (their
Feedback reads them where they are). When one settles (`LEGACY_PEEK_LUA`), it is moved first:
its pending hash is recorded again in its segment's slot under the same id (record.lua, which
refuses if that slot already has its tombstone), then the legacy copy is replaced by a
`moved` tombstone naming the tag (`LEGACY_RETIRE_LUA`), then it settles in the segment's slot
like any decision. Its reward can only ever be applied there, by settle.lua, which applies a
pending decision once; so moving it twice (two replicas at once, or a retry after a crash) is
harmless: the second copy is refused by the tombstone, or is the same pending decision.
The expiry sweep visits the legacy slot's deadline index too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import structlog

from banditd.errors import ConfigError, StateUnavailableError
from banditd.feedback import ids
from banditd.state import keys

log = structlog.get_logger("banditd.state")

LAYOUT_WAIT_S = 30.0  # how long a starting replica waits for another one's migration
LOCK_MS = 30_000  # the migration lock's lease, renewed after every segment
_DONE = keys.LAYOUT_SEGMENT.encode()

# KEYS[1] pending:<id>, KEYS[2] tomb:<id>, KEYS[3] deadlines: all in the legacy slot.
# ARGV[1] decision id, ARGV[2] mode (feedback | expire | orphan | move), ARGV[3] now, f64 LE.
# Returns what settle.lua would for a decision that is not pending here ({outcome, arm, reward,
# model_version, settled_at, false}, {'skip'}, {'lost'}), or {'dropped', ...} for an orphan,
# or {'moved', tag}: it was moved to that tag's slot, settle it there;
# or {'pending', pttl ms, {field, value, ...}}: move it (then retire it here) and settle it.
LEGACY_PEEK_LUA = """
local id, mode = ARGV[1], ARGV[2]
local t = redis.call('HMGET', KEYS[2], 'outcome', 'arm', 'reward', 'settled_at',
                     'model_version', 'tag')
if t[1] == 'moved' then
  if mode == 'expire' or mode == 'orphan' then redis.call('ZREM', KEYS[3], id) end
  return {'moved', t[6]}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if mode ~= 'feedback' then
    redis.call('ZREM', KEYS[3], id)
    if t[1] then return {'skip'} end
    return {'lost'}
  end
  if not t[1] then return {'unknown', '', '', 0, '', false} end
  local outcome = 'expired'
  if t[1] == 'applied' then outcome = 'duplicate' end
  return {outcome, t[2], t[3], tonumber(t[5]), t[4], false}
end
if mode == 'expire' or mode == 'orphan' then
  local deadline = struct.unpack('<d', redis.call('HGET', KEYS[1], 'deadline'))
  if not (deadline < struct.unpack('<d', ARGV[3])) then return {'skip'} end
  if mode == 'orphan' then
    local p = redis.call('HMGET', KEYS[1], 'arm', 'segment')
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[3], id)
    return {'dropped', p[1], '', 0, ARGV[3], p[2]}
  end
end
return {'pending', redis.call('PTTL', KEYS[1]), redis.call('HGETALL', KEYS[1])}
"""

# KEYS as LEGACY_PEEK_LUA. ARGV[1] decision id, ARGV[2] the tag of the slot it was moved to,
# ARGV[3] tombstone TTL ms, ARGV[4] now, f64 LE. The legacy copy goes; a `moved` tombstone
# sends later Feedback (and a late record of the same id) to the tag's slot.
LEGACY_RETIRE_LUA = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[2], 'outcome', 'moved', 'tag', ARGV[2], 'settled_at', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS[1] model, KEYS[2] sums, KEYS[3] segarms: the legacy slot's.
# Returns {the apply counter, {every segment with state}} (indexed sums, version/fingerprint).
LEGACY_SEGMENTS_LUA = """
local names, seen = {}, {}
local function add(s)
  if not seen[s] then seen[s] = true; names[#names + 1] = s end
end
for _, s in ipairs(redis.call('HKEYS', KEYS[3])) do add(s) end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local s = string.match(f, '^[vf] (.*)$')
  if s then add(s) end
end
return {redis.call('HGET', KEYS[1], 'c') or '0', names}
"""

# KEYS as LEGACY_SEGMENTS_LUA. ARGV[1] segment.
# Returns {version or false, fingerprint or false, sums field, stamp, blob, ...}.
LEGACY_EXPORT_LUA = """
local seg = ARGV[1]
local head = redis.call('HMGET', KEYS[1], 'v ' .. seg, 'f ' .. seg)
local out = {head[1] or false, head[2] or false}
local index = redis.call('HGET', KEYS[3], seg)
if index then
  for f in string.gmatch(index, '[^\\n]+') do
    local blob = redis.call('HGET', KEYS[2], f)
    if blob then
      out[#out + 1] = f
      out[#out + 1] = redis.call('HGET', KEYS[1], 'a ' .. f) or '0'
      out[#out + 1] = blob
    end
  end
end
return out
"""

# KEYS[1] model, KEYS[2] sums, KEYS[3] segarms: the segment's slot (segment.lua in front).
# ARGV[1] segment, ARGV[2] the legacy apply counter, ARGV[3] version or '', ARGV[4]
# fingerprint or '', then (sums field, stamp, blob) triples. Writes them as they were (the
# blobs keep their stamps) and raises the slot's counter to at least the legacy one.
ADOPT_SEGMENT_LUA = """
local seg = ARGV[1]
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'c') or '0') then
  redis.call('HSET', KEYS[1], 'c', ARGV[2])
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'v ' .. seg, ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'f ' .. seg, ARGV[4]) end
for i = 5, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  redis.call('HSET', KEYS[1], 'a ' .. ARGV[i], ARGV[i + 1])
  index_sums_field(KEYS[3], seg, ARGV[i])
end
return (#ARGV - 4) / 3
"""

# KEYS[1] the lock; ARGV[1] its token, ARGV[2] lease ms (0: release). Returns 1 if held.
LOCK_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

Call = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class Layout:
    """Brings a Redis to the store's key layout (`ensure`), once per process.

    `call` runs one Redis call with the store's error translation, bypassing the check that
    the layout is ready (the store's `call(..., migrating=True)`)."""

    def __init__(self, client: Any, k: keys.Keys, call: Call, segment_lua: str,
                 index_lua: str) -> None:  # fmt: skip
        self._redis = client
        self._keys = k
        self._call = call
        self._index = client.register_script(index_lua)
        self._segments = client.register_script(LEGACY_SEGMENTS_LUA)
        self._export = client.register_script(LEGACY_EXPORT_LUA)
        self._adopt = client.register_script(segment_lua + ADOPT_SEGMENT_LUA)
        self._forget = client.register_script(
            segment_lua + "return forget_segment(KEYS[1], KEYS[2], KEYS[3], ARGV[1])"
        )
        self._lock = client.register_script(LOCK_LUA)
        self.peek = client.register_script(LEGACY_PEEK_LUA)
        self.retire = client.register_script(LEGACY_RETIRE_LUA)
        self.ready = False
        self.retired = False  # key_layout = "policy" and another replica migrated the Redis
        self.migrated_segments = 0  # moved by this process (a test and the log read it)
        self._running = asyncio.Lock()

    async def ensure(self, wait_s: float = 0.0) -> None:
        """Return once the Redis has this store's layout, migrating it if need be; wait up to
        wait_s for another replica's migration. StateUnavailableError if not ready by then;
        ConfigError if key_layout = "policy" meets state already migrated. Concurrent callers
        in this process wait for one attempt at a time (a migration, if this one runs it)."""
        until = time.monotonic() + wait_s
        while not self.ready:
            async with self._running:
                if self.ready or await self._attempt():
                    self.ready = True
                    return
            if time.monotonic() >= until:
                raise StateUnavailableError(
                    "another replica is migrating the Redis key layout (retry; docs/redis.md)"
                )
            await asyncio.sleep(0.1)

    async def still_current(self) -> bool:
        """False once a replica with key_layout = "policy" sees the Redis migrated under it
        (the watcher asks every ping): from then on it refuses every call (UNAVAILABLE, so
        callers retry on the replicas that replace it), rather than write keys nobody reads."""
        if self._keys.per_segment or self.retired:
            return not self.retired
        if await self._call(lambda: self._redis.get(self._keys.layout())) == _DONE:
            self.retired = True
            hint = "restart with store.redis.key_layout = 'segment' (docs/redis.md, 'Upgrading')"
            log.error("state.layout_migrated_elsewhere", hint=hint)
        return not self.retired

    async def _attempt(self) -> bool:
        """Check the layout, migrate if this replica gets the lock. False: another has it."""
        k = self._keys
        done = await self._call(lambda: self._redis.get(k.layout()))
        if not k.per_segment:
            if done == _DONE:
                raise ConfigError(
                    "store.redis.key_layout = 'policy', but this Redis holds the state in the"
                    " per-segment layout (migrated by a replica with key_layout = 'segment');"
                    " set key_layout = 'segment' (the migration cannot be undone)"
                )
            for policy in await self._policies():
                await self._index_legacy(policy)
            return True
        if done == _DONE:
            return True
        token = secrets.token_hex(8)
        lock = k.layout_lock()
        if not await self._call(lambda: self._redis.set(lock, token, nx=True, px=LOCK_MS)):
            return False
        try:
            if await self._call(lambda: self._redis.get(k.layout())) == _DONE:
                return True  # another replica finished between our two looks
            started = time.monotonic()
            policies = await self._policies()
            for policy in policies:
                await self._migrate(policy, token)
            await self._call(lambda: self._redis.set(k.layout(), keys.LAYOUT_SEGMENT))
            log.info("state.layout_migrated", policies=len(policies),
                     segments=self.migrated_segments,
                     seconds=round(time.monotonic() - started, 3))  # fmt: skip
            return True
        finally:
            await self._call(lambda: self._lock(keys=[lock], args=[token, "0"]))

    async def _policies(self) -> list[str]:
        raw = await self._call(lambda: self._redis.smembers(self._keys.policies()))
        return sorted(p.decode() for p in raw)

    async def _index_legacy(self, policy: str) -> None:
        """index.lua on the legacy slot: register state older than the segment registry."""
        k, slot = self._keys, self._keys.legacy(policy)
        lk = [k.model(slot), k.sums(slot), k.segments(policy), k.segment_arms(slot)]
        indexed = await self._call(lambda: self._index(keys=lk, args=[repr(time.time())]))
        if indexed:
            log.info("state.segments_indexed", policy=policy, fields=int(indexed))

    async def _migrate(self, policy: str, token: str) -> None:
        """Move each of the policy's segments from the legacy slot to its own (module doc)."""
        k = self._keys
        legacy = k.legacy(policy)
        # First: settle.lua and load.lua refuse the legacy slot from now on, so a replica still
        # on key_layout = "policy" cannot learn into it while (or after) it moves.
        await self._call(partial(self._redis.hset, k.model(legacy), "migrated", "1"))
        await self._index_legacy(policy)
        lk = [k.model(legacy), k.sums(legacy), k.segment_arms(legacy)]
        counter, names = await self._call(lambda: self._segments(keys=lk))
        lock = partial(self._lock, keys=[k.layout_lock()], args=[token, LOCK_MS])
        for raw in names:
            segment = raw.decode()
            await self._call(lock)
            state = await self._call(partial(self._export, keys=lk, args=[segment]))
            version, fingerprint, arms = state[0], state[1], state[2:]
            tag = ids.segment_tag(segment)
            slot = k.slot(policy, tag)
            await self._call(partial(self._redis.sadd, k.tags(policy), tag))
            args = [segment, counter, version or b"", fingerprint or b"", *arms]
            sk = [k.model(slot), k.sums(slot), k.segment_arms(slot)]
            await self._call(partial(self._adopt, keys=sk, args=args))
            await self._call(partial(self._forget, keys=lk, args=[segment]))
            self.migrated_segments += 1
