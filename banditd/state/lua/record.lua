-- record.lua: log a pending decision until its deadline, unless it was already settled.
-- (A record retried after a timeout, or flushed from the outage buffer, must not resurrect a
-- decision whose feedback was already applied: that would apply it twice on expiry.) Every key
-- is in the decision's slot; registering its segment (the policy's registry, another slot) is
-- the caller's separate call.
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
-- (Both ids carry the same tag, so they share the slot.)
--
-- KEYS[4]  pending:<plain id>  HASH  (buffered ids only)
-- KEYS[5]  tomb:<plain id>     HASH  (buffered ids only)
-- ARGV[1]  decision id
-- ARGV[2]  deadline, unix seconds as text (exact float repr; the ZSET score)
-- ARGV[3]  pending TTL, milliseconds (reward wait window + grace)
-- ARGV[4]  now, unix s (a superseded copy's settled_at)
-- ARGV[5]  the plain id of a buffered decision, else ''
-- ARGV[6]  tombstone TTL, milliseconds
-- ARGV[7..] field, value, field, value, ... (keys.PENDING_FIELDS)
-- Returns 1 if recorded, 0 if the decision already has a tombstone.

if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if ARGV[5] ~= '' then
  local settled = redis.call('HGETALL', KEYS[5])
  if #settled > 0 and redis.call('HGET', KEYS[5], 'outcome') ~= 'superseded' then
    redis.call('HSET', KEYS[2], unpack(settled))
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
    return 0
  end
  redis.call('DEL', KEYS[4])
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('HSET', KEYS[5], 'outcome', 'superseded', 'arm', '', 'reward', '',
             'settled_at', ARGV[4], 'model_version', 0)
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
