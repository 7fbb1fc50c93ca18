-- segment.lua: shared by the scripts that write a segment's state (prepended to each by
-- redis_store.py). A segment's state lives in its slot (banditd/state/keys.py): its version and
-- fingerprint fields in the slot's model hash, one sums field "<segment> <arm>" and one stamp
-- field "a <segment> <arm>" per arm with state, and its entry in the slot's segarms index (which
-- lists its sums fields, '\n'-separated, so forgetting it needs no scan). Its entry in the
-- policy's segment registry is in another slot: the caller updates it in a separate call.

-- Forget one segment's learned state (not its registry entry). Returns 1 if it had any, else 0.
local function forget_segment(model, sums, segarms, segment)
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
  local gone = redis.call('HDEL', model, 'v ' .. segment, 'f ' .. segment)
  if index or gone > 0 then return 1 end
  return 0
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

