-- record.lua: log a pending decision until its deadline, unless it was already settled, and
-- register its segment as used now (making room by forgetting the least recently used segment
-- when the policy evicts at its limit).
-- (A record retried after a timeout, or flushed from the outage buffer, must not resurrect a
-- decision whose feedback was already applied: that would apply it twice on expiry.)
--
-- KEYS[1]  pending:<id>  HASH
-- KEYS[2]  tomb:<id>     HASH
-- KEYS[3]  deadlines     ZSET
-- A buffered decision (its id ends in .b<time>, feedback/ids.py) may have been recorded already
-- under its plain id: its first record timed out, but a Redis that was only frozen runs it when
-- it resumes. Nobody holds the plain id, so that copy must never be learned: it is removed, and
-- a tombstone under the plain id ("superseded", as dropped) stops a plain record still on its
-- way from landing later. If the sweeper already settled the plain copy (its deadline passed
-- during the outage), that settlement stands and the buffered id gets the same tombstone.
--
-- KEYS[4..7]  model, sums, segments, segarms (RedisModelStore.segment_keys)
-- KEYS[8]  pending:<plain id>  HASH  (buffered ids only)
-- KEYS[9]  tomb:<plain id>     HASH  (buffered ids only)
-- ARGV[1]  decision id
-- ARGV[2]  deadline, unix seconds as text (exact float repr; the ZSET score)
-- ARGV[3]  pending TTL, milliseconds (reward wait window + grace)
-- ARGV[4]  the decision's segment
-- ARGV[5]  now, unix s (the segment's last use)
-- ARGV[6]  the policy's segment limit when it evicts at it, else 0
-- ARGV[7]  refresh a known segment's last use only if older than this many seconds
-- ARGV[8]  the plain id of a buffered decision, else ''
-- ARGV[9]  tombstone TTL, milliseconds
-- ARGV[10..] field, value, field, value, ... (keys.PENDING_FIELDS)
-- Returns 1 if recorded, 0 if the decision already has a tombstone.

if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if ARGV[8] ~= '' then
  local settled = redis.call('HGETALL', KEYS[9])
  if #settled > 0 and redis.call('HGET', KEYS[9], 'outcome') ~= 'superseded' then
    redis.call('HSET', KEYS[2], unpack(settled))
    redis.call('PEXPIRE', KEYS[2], ARGV[9])
    return 0
  end
  redis.call('DEL', KEYS[8])
  redis.call('ZREM', KEYS[3], ARGV[8])
  redis.call('HSET', KEYS[9], 'outcome', 'superseded', 'arm', '', 'reward', '',
             'settled_at', ARGV[5], 'model_version', 0)
  redis.call('PEXPIRE', KEYS[9], ARGV[9])
end
local now = tonumber(ARGV[5])
local seen = redis.call('ZSCORE', KEYS[6], ARGV[4])
if not seen then
  local limit = tonumber(ARGV[6])
  if limit > 0 then
    local count = redis.call('ZCARD', KEYS[6])
    if count >= limit then
      for _, segment in ipairs(redis.call('ZRANGE', KEYS[6], 0, count - limit)) do
        forget_segment(KEYS[4], KEYS[5], KEYS[6], KEYS[7], segment)
      end
    end
  end
  redis.call('ZADD', KEYS[6], now, ARGV[4])
elseif now - tonumber(seen) > tonumber(ARGV[7]) then
  redis.call('ZADD', KEYS[6], now, ARGV[4])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
