-- prune.lua: unregister segments idle since before a cutoff (the policy's segment_idle_ttl_s).
-- The caller forgets each returned segment's state in its own slot (forget_segment) next.
--
-- KEYS[1] segments ZSET (the policy's registry)
-- ARGV[1] cutoff, unix s (segments last used before it go), ARGV[2] at most this many
-- Returns the segments unregistered.

local idle = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, segment in ipairs(idle) do redis.call('ZREM', KEYS[1], segment) end
return idle
