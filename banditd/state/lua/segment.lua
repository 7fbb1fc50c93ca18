-- segment.lua: shared by load.lua, settle.lua, prune.lua and the Admin scripts (prepended to
-- each by redis_store.py). A segment's state: its version and fingerprint fields in the model
-- hash, one sums field "<segment> <arm>" and one stamp field "a <segment> <arm>" per arm with
-- state, its entry in the segments ZSET (scored by last use) and in the segarms index (which
-- lists its sums fields, '\n'-separated, so forgetting it needs no scan).

-- Forget one segment's learned state. Returns 1 if the segment was registered, else 0.
local function forget_segment(model, sums, segments, segarms, segment)
  local index = redis.call('HGET', segarms, segment)
  if index then
    local fields, stamps = {}, {}
    for f in string.gmatch(index, '[^\n]+') do
      fields[#fields + 1] = f
      stamps[#stamps + 1] = 'a ' .. f
    end
    for i = 1, #fields, 1000 do  -- (unpack's stack limit)
      local j = math.min(i + 999, #fields)
      redis.call('HDEL', sums, unpack(fields, i, j))
      redis.call('HDEL', model, unpack(stamps, i, j))
    end
    redis.call('HDEL', segarms, segment)
  end
  redis.call('HDEL', model, 'v ' .. segment, 'f ' .. segment)
  return redis.call('ZREM', segments, segment)
end

-- Add a sums field to its segment's index (when an arm's sums are first written); idempotent.
local function index_sums_field(segarms, segment, field)
  local index = redis.call('HGET', segarms, segment)
  if not index then
    index = field
  elseif string.find('\n' .. index .. '\n', '\n' .. field .. '\n', 1, true) then
    return
  else
    index = index .. '\n' .. field
  end
  redis.call('HSET', segarms, segment, index)
end

