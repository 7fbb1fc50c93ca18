-- touch.lua: register a segment in its policy's registry as used now (a Route's record),
-- making room at the policy's segment limit by unregistering the least recently used segments
-- when the policy evicts. The registry is in the policy's slot, the segments' state in theirs:
-- the caller forgets each returned segment's state in its own slot (forget_segment) next.
--
-- KEYS[1]  segments  ZSET  (segment -> last use, unix s)
-- ARGV[1]  the segment
-- ARGV[2]  now, unix s
-- ARGV[3]  the policy's segment limit when it evicts at it, else 0
-- ARGV[4]  refresh a known segment's last use only if older than this many seconds
-- Returns the segments unregistered to make room (usually none).

local now = tonumber(ARGV[2])
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
local evicted = {}
if not seen then
  local limit = tonumber(ARGV[3])
  if limit > 0 then
    local count = redis.call('ZCARD', KEYS[1])
    if count >= limit then
      evicted = redis.call('ZRANGE', KEYS[1], 0, count - limit)
      for _, segment in ipairs(evicted) do redis.call('ZREM', KEYS[1], segment) end
    end
  end
  redis.call('ZADD', KEYS[1], now, ARGV[1])
elseif now - tonumber(seen) > tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
return evicted
