"""Admin operations on the Redis store: arm lists, reset, export and import of a policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from banditd.state import codec, keys
from banditd.state.redis_store import RedisModelStore, segment_script

# KEYS: RedisModelStore.segment_keys (model, sums, segments, segarms). Forget every model of
# the policy but keep the apply counter "c", so stamps never repeat and no replica mistakes an
# old cached state for a new one. Returns how many (policy, segment) models were forgotten.
RESET_LUA = """
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if f ~= 'c' then
    redis.call('HDEL', KEYS[1], f)
    if string.sub(f, 1, 2) == 'v ' then n = n + 1 end
  end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return n
"""

# KEYS: RedisModelStore.segment_keys (model, sums, segments, segarms).
# ARGV[1] "1" = reset first; ARGV[2] now (unix s: imported segments count as used now);
#   ARGV[3] m = number of models; then m groups of (segment, version_field, version,
#   fingerprint_field, fingerprint); then groups of (segment, sums_field, stamp_field, sums
#   blob). Each blob gets a fresh stamp (bytes 25..32).
# Returns the number of arms written. All or nothing: the caller validated every value.
IMPORT_LUA = """
if ARGV[1] == '1' then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if f ~= 'c' then redis.call('HDEL', KEYS[1], f) end
  end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
end
local now = ARGV[2]
local m = tonumber(ARGV[3])
local i = 4
for _ = 1, m do
  redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
  redis.call('ZADD', KEYS[3], now, ARGV[i])
  i = i + 5
end
local arms = 0
while i <= #ARGV do
  local stamp = redis.call('HINCRBY', KEYS[1], 'c', 1)
  local blob = ARGV[i + 3]
  blob = string.sub(blob, 1, 24) .. struct.pack('<d', stamp) .. string.sub(blob, 33)
  redis.call('HSET', KEYS[2], ARGV[i + 1], blob)
  redis.call('HSET', KEYS[1], ARGV[i + 2], stamp)
  index_sums_field(KEYS[4], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], now, ARGV[i])
  arms = arms + 1
  i = i + 4
end
return arms
"""


@dataclass(frozen=True, slots=True)
class ModelMeta:
    segment: str
    fingerprint: str
    version: int


@dataclass(frozen=True, slots=True)
class PolicyExport:
    """A policy's learned state: model metadata and every arm's sums."""

    policy: str
    models: list[ModelMeta] = field(default_factory=list)
    arms: list[tuple[str, str, codec.ArmSums]] = field(default_factory=list)  # segment, arm


class RedisAdmin:
    """Admin on the keys of a RedisModelStore (same client, same error translation)."""

    def __init__(self, store: RedisModelStore) -> None:
        self._store = store
        self._keys = store.keys
        self._reset = store.client.register_script(RESET_LUA)
        self._import = store.client.register_script(segment_script() + IMPORT_LUA)

    async def policies(self) -> list[str]:
        raw = await self._store.call(lambda: self._store.client.smembers(self._keys.policies()))
        return sorted(p.decode() for p in raw)

    async def arm_list(self, policy: str) -> list[str] | None:
        """The runtime arm list, or None if the Admin never set one (the config's applies)."""
        raw = await self._store.call(lambda: self._store.client.smembers(self._keys.arms(policy)))
        return sorted(a.decode() for a in raw) or None

    async def set_arm_list(self, policy: str, arms: Sequence[str]) -> None:
        key = self._keys.arms(policy)
        current = set(await self.arm_list(policy) or ())
        if add := sorted(set(arms) - current):
            await self._store.call(lambda: self._store.client.sadd(key, *add))
        if drop := sorted(current - set(arms)):
            await self._store.call(lambda: self._store.client.srem(key, *drop))

    async def export(self, policy: str) -> PolicyExport:
        client = self._store.client
        model = await self._store.call(lambda: client.hgetall(self._keys.model(policy)))
        sums = await self._store.call(lambda: client.hgetall(self._keys.sums(policy)))
        fields = {k.decode(): v for k, v in model.items()}
        models = [
            ModelMeta(
                name[2:],
                fields.get(keys.fingerprint_field(name[2:]), b"").decode(),
                int(value),
            )
            for name, value in sorted(fields.items())
            if name.startswith("v ")
        ]
        arms = []
        for name, blob in sorted(sums.items()):
            segment, arm = keys.split_sums_field(name.decode())
            arms.append((segment, arm, codec.decode_sums(blob)))
        return PolicyExport(policy, models, arms)

    async def import_(self, policy: str, state: PolicyExport, replace: bool, now: float) -> int:
        args: list[bytes | str] = ["1" if replace else "0", repr(now), str(len(state.models))]
        for m in state.models:
            args += [m.segment, keys.version_field(m.segment), str(m.version),
                     keys.fingerprint_field(m.segment), m.fingerprint]  # fmt: skip
        for segment, arm, sums in state.arms:
            args += [segment, keys.sums_field(segment, arm), keys.stamp_field(segment, arm),
                     codec.encode_sums(sums)]  # fmt: skip
        k = self._store.segment_keys(policy)
        await self._store.call(lambda: self._store.client.sadd(self._keys.policies(), policy))
        return int(await self._store.call(lambda: self._import(keys=k, args=args)))

    async def reset(self, policy: str) -> int:
        k = self._store.segment_keys(policy)
        return int(await self._store.call(lambda: self._reset(keys=k)))
