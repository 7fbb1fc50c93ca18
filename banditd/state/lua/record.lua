-- record.lua: log a pending decision until its deadline, unless it was already settled.
-- (A record retried after a timeout, or flushed from the outage buffer, must not resurrect a
-- decision whose feedback was already applied: that would apply it twice on expiry.)
--
-- KEYS[1]  pending:<id>  HASH
-- KEYS[2]  tomb:<id>     HASH
-- KEYS[3]  deadlines     ZSET
-- ARGV[1]  decision id
-- ARGV[2]  deadline, unix seconds as text (exact float repr; the ZSET score)
-- ARGV[3]  pending TTL, milliseconds (reward wait window + grace)
-- ARGV[4..] field, value, field, value, ... (keys.PENDING_FIELDS)
-- Returns 1 if recorded, 0 if the decision already has a tombstone.

if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
