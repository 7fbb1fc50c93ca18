"""Admin operations on the Redis store: arm lists, reset, export and import of a policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from banditd.feedback import ids
from banditd.state import codec, keys
from banditd.state.keys import Slot
from banditd.state.redis_store import RedisModelStore, segment_script

# KEYS: RedisModelStore.slot_keys (model, sums, segarms) of one slot. Forget every model of the
# slot but keep its apply counter "c", so stamps never repeat and no replica mistakes an old
# cached state for a new one (and a policy's own slot's "migrated" mark: layout.py). Returns
# how many (policy, segment) models were forgotten.
RESET_LUA = """
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if f ~= 'c' and f ~= 'migrated' then
    redis.call('HDEL', KEYS[1], f)
    if string.sub(f, 1, 2) == 'v ' then n = n + 1 end
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
return n
"""

# KEYS: RedisModelStore.slot_keys (model, sums, segarms) of one slot.
# ARGV[1] m = number of models; then m groups of (version_field, version, fingerprint_field,
#   fingerprint); then groups of (segment, sums_field, stamp_field, sums blob), all of segments
#   in this slot. Each blob gets a fresh stamp (bytes 25..32).
# Returns the number of arms written. The caller validated every value and registers the
# segments in the policy's registry.
IMPORT_LUA = """
local m = tonumber(ARGV[1])
local i = 2
for _ = 1, m do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  i = i + 4
end
local arms = 0
while i <= #ARGV do
  local stamp = redis.call('HINCRBY', KEYS[1], 'c', 1)
  local blob = ARGV[i + 3]
  blob = string.sub(blob, 1, 24) .. struct.pack('<d', stamp) .. string.sub(blob, 33)
  redis.call('HSET', KEYS[2], ARGV[i + 1], blob)
  redis.call('HSET', KEYS[1], ARGV[i + 2], stamp)
  index_sums_field(KEYS[3], ARGV[i], ARGV[i + 1])
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
        """Every slot's model fields and sums, merged (a Cluster reads them slot by slot, so an
        export taken under traffic is not one instant's state; as before, it is not one
        instant's either across policies)."""
        client, k = self._store.client, self._keys
        fields: dict[str, bytes] = {}
        sums: dict[bytes, bytes] = {}
        for slot in await self._store.slots(policy):
            model = await self._store.call(partial(client.hgetall, k.model(slot)))
            fields.update((f.decode(), v) for f, v in model.items() if f != b"c")
            sums.update(await self._store.call(partial(client.hgetall, k.sums(slot))))
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
        """Write an exported state (after a reset if `replace`): one script per slot, then the
        segments' registration. Not atomic across slots: an import cut short by an outage is
        retried whole (with replace, it converges to the same state)."""
        if replace:
            await self.reset(policy)
        k, store = self._keys, self._store
        by_slot: dict[Slot, tuple[list[bytes | str], list[bytes | str]]] = {}
        for m in state.models:
            models, _ = by_slot.setdefault(k.segment_slot(policy, m.segment), ([], []))
            models += [keys.version_field(m.segment), str(m.version),
                       keys.fingerprint_field(m.segment), m.fingerprint]  # fmt: skip
        for segment, arm, sums in state.arms:
            _, arms = by_slot.setdefault(k.segment_slot(policy, segment), ([], []))
            arms += [segment, keys.sums_field(segment, arm), keys.stamp_field(segment, arm),
                     codec.encode_sums(sums)]  # fmt: skip
        await store.call(partial(store.client.sadd, k.policies(), policy))
        if k.per_segment:
            tags = sorted({ids.segment_tag(s) for s in self._segments(state)})
            if tags:
                await store.call(partial(store.client.sadd, k.tags(policy), *tags))
        written = 0
        for slot, (models, arms) in by_slot.items():
            args = [str(len(models) // 4), *models, *arms]
            keys_ = store.slot_keys(slot)
            written += int(await store.call(partial(self._import, keys=keys_, args=args)))
        if segments := self._segments(state):
            registry = k.segments(policy)
            await store.call(partial(store.client.zadd, registry, dict.fromkeys(segments, now)))
        return written

    @staticmethod
    def _segments(state: PolicyExport) -> list[str]:
        return sorted({m.segment for m in state.models} | {s for s, _, _ in state.arms})

    async def reset(self, policy: str) -> int:
        """Forget every model of the policy, slot by slot, then its registry."""
        n = 0
        for slot in await self._store.slots(policy):
            n += int(await self._store.call(partial(self._reset, keys=self._store.slot_keys(slot))))
        await self._store.call(partial(self._store.client.delete, self._keys.segments(policy)))
        self._store.forget_registrations(policy)
        return n
