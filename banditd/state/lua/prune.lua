-- prune.lua: forget segments idle since before a cutoff (the policy's segment_idle_ttl_s).
--
-- KEYS[1] model HASH, KEYS[2] sums HASH, KEYS[3] segments ZSET, KEYS[4] segarms HASH
-- ARGV[1] cutoff, unix s (segments last used before it go), ARGV[2] at most this many
-- Returns the segments forgotten.

local idle = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, segment in ipairs(idle) do
  forget_segment(KEYS[1], KEYS[2], KEYS[3], KEYS[4], segment)
end
return idle
