-- index.lua: build a policy's segment registry and index from its sums hash, once. State
-- written before segments were tracked (banditd < 0.2) has sums fields that no index lists:
-- this registers each segment (as used now) and indexes its fields, so the segment limit,
-- idle expiry and DeleteSegment see it. Idempotent; marked done by the model hash's "layout".
--
-- KEYS: model, sums, segments, segarms (RedisModelStore.segment_keys). ARGV[1] now, unix s.
-- Returns the number of sums fields indexed (0 when already done).

if redis.call('HGET', KEYS[1], 'layout') == '2' then return 0 end
local n = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  local segment = string.match(field, '^(%S*) ')
  if segment then
    index_sums_field(KEYS[4], segment, field)
    redis.call('ZADD', KEYS[3], 'NX', ARGV[1], segment)
    n = n + 1
  end
end
redis.call('HSET', KEYS[1], 'layout', '2')
return n
