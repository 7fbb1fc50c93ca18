-- settle.lua: end one pending decision (by feedback or by expiry) and apply its reward to the
-- arm's additive sums, exactly once. The same join table as banditd/feedback/joiner.py.
-- All keys are in the decision's slot (its policy and segment tag, banditd/state/keys.py).
-- A reward that creates an arm's first state in its segment indexes it in the slot's segarms;
-- registering the segment in the policy's registry (another slot) is the caller's next call,
-- which it makes when the reply's previous stamp is "-1" (no state before).
--
-- KEYS[1]  pending:<id>  HASH (keys.PENDING_FIELDS)
-- KEYS[2]  tomb:<id>     HASH (keys.TOMB_FIELDS)
-- KEYS[3]  model         HASH (counter, versions, fingerprints, arm stamps)
-- KEYS[4]  sums          HASH (codec sums blobs)
-- KEYS[5]  deadlines     ZSET
-- KEYS[6]  segarms       HASH (segment -> its sums fields; segment.lua)
-- ARGV[1]  decision id
-- ARGV[2]  mode: "feedback" | "expire" (only if due) | "orphan" (policy gone: forget, no tomb)
-- ARGV[3]  reward, float64 LE ("" unless mode = feedback)
-- ARGV[4]  now, float64 LE
-- ARGV[5]  default reward, float64 LE, or "" = drop decisions whose reward never came
-- ARGV[6]  decay factor per epoch, float64 LE (1.0 = no forgetting)
-- ARGV[7]  decay epoch of now, floor(now / decay_interval_s), decimal integer
-- ARGV[8]  fingerprint of the policy's feature pipeline
-- ARGV[9]  spec dim (the prior's dimension), decimal integer
-- ARGV[10] codec header of a sums blob of dim ARGV[9]
-- ARGV[11] tombstone TTL, milliseconds
--
-- Returns one of
--   {outcome, arm, reward, model_version, settled_at, segment}  (reward, settled_at: float64
--       LE or ""; outcome: applied|expired|duplicate|unknown|defaulted|dropped; segment is
--       nil when the answer comes from a tombstone, as the memory store reports it)
--   ..., x, previous stamp, stamp, stamp field}  the same six, and when a reward was added
--       to sums that no decay scaled: the decision's vector blob, the arm's stamp before
--       ("-1": the arm had no sums) and after, and its stamp field. A replica whose cached
--       arm holds that previous stamp adds x itself instead of fetching the sums again.
--   {"skip"}          expire mode: not due, or already settled
--   {"lost"}          expire mode: the pending hash vanished (TTL) before anyone settled it
--   {"error", code, detail}  code = fingerprint | dim | nonfinite (the update would store a
--       NaN or an infinity) | migrated (the slot's state moved to per-segment slots);
--       nothing was changed

local function f64(s, pos) return (struct.unpack('<d', s, pos or 1)) end
local function p64(v) return struct.pack('<d', v) end

-- float64 arrays in and out of blobs, up to CHUNK values per struct call. One call per value
-- made a settle cost 185 µs of Redis CPU at d = 32 and 672 µs at d = 64 (stop 11); the chunk
-- keeps each call's results inside Lua's C stack limit (LUAI_MAXCSTACK, 8000).
local CHUNK = 4000
local function f64s(s, pos, count)
  if count <= CHUNK then  -- one call; its last result is the next position: drop it
    local vals = {struct.unpack('<' .. string.rep('d', count), s, pos)}
    vals[count + 1] = nil
    return vals
  end
  local out, n = {}, 0
  while n < count do
    local k = math.min(count - n, CHUNK)
    local vals = {struct.unpack('<' .. string.rep('d', k), s, pos + 8 * n)}
    for i = 1, k do out[n + i] = vals[i] end
    n = n + k
  end
  return out
end
local function p64s(values, parts)
  local count, i = #values, 1
  while i <= count do
    local j = math.min(i + CHUNK - 1, count)
    parts[#parts + 1] = struct.pack('<' .. string.rep('d', j - i + 1), unpack(values, i, j))
    i = j + 1
  end
end

local id, mode = ARGV[1], ARGV[2]
local now = f64(ARGV[4])

local function apply(p, reward)
  local fp = redis.call('HGET', KEYS[3], p.ff)
  if fp and fp ~= ARGV[8] then return nil, {'error', 'fingerprint', fp} end
  local x = p.x
  local d = (#x - 8) / 8
  local xs = f64s(x, 9, d)
  local blob = redis.call('HGET', KEYS[4], p.sf)
  local header, n, epoch
  local b, s = {}, {}
  local m = d * (d + 1) / 2
  if blob then
    local sd = struct.unpack('<I4', blob, 5)
    if sd ~= d then return nil, {'error', 'dim', sd .. ' ' .. d} end
    header = string.sub(blob, 1, 8)
    n, epoch = f64(blob, 9), f64(blob, 17)
    b, s = f64s(blob, 33, d), f64s(blob, 33 + 8 * d, m)
  else
    local sd = tonumber(ARGV[9])
    if sd ~= d then return nil, {'error', 'dim', sd .. ' ' .. d} end
    header, n, epoch = ARGV[10], 0, -1
    for i = 1, d do b[i] = 0.0 end
    for k = 1, m do s[k] = 0.0 end
  end
  local new_arm = not blob
  local scaled = false
  local factor = f64(ARGV[6])
  if factor < 1 then
    local now_epoch = tonumber(ARGV[7])
    local last = epoch
    if last == -1 then last = now_epoch end
    if now_epoch > last then
      scaled = true
      local g = factor ^ (now_epoch - last)
      for i = 1, d do b[i] = g * b[i] end
      for k = 1, m do s[k] = g * s[k] end
    end
    if now_epoch > epoch then epoch = now_epoch end
  end
  -- total: one sum of every new entry, to refuse an update that would store a NaN or an
  -- infinity (either makes the sum non-finite, as does an overflow) before anything is written.
  local k, total = 0, 0
  for i = 1, d do
    local xi = xs[i]
    for j = i, d do
      k = k + 1
      local v = s[k] + xi * xs[j]
      s[k] = v
      total = total + v
    end
    local v = b[i] + reward * xi
    b[i] = v
    total = total + v
  end
  if total ~= total or total == math.huge or total == -math.huge then
    return nil, {'error', 'nonfinite', p.sf}
  end
  n = n + 1
  local prev = redis.call('HGET', KEYS[3], p.af) or '-1'
  local stamp = redis.call('HINCRBY', KEYS[3], 'c', 1)
  local version = redis.call('HINCRBY', KEYS[3], p.vf, 1)
  redis.call('HSET', KEYS[3], p.af, stamp)
  if not fp then redis.call('HSET', KEYS[3], p.ff, ARGV[8]) end
  local out = {header, p64(n), p64(epoch), p64(stamp)}
  p64s(b, out)
  p64s(s, out)
  redis.call('HSET', KEYS[4], p.sf, table.concat(out))
  if new_arm then index_sums_field(KEYS[6], p.segment, p.sf) end  -- the arm's first state
  local delta = nil
  if not scaled then delta = {p.x, prev, stamp, p.af} end
  return version, nil, delta
end

-- Remove the pending decision, apply `reward` (false = none), leave a tombstone.
local function finish(p, outcome, reward)
  local version, delta
  if reward then
    local err
    version, err, delta = apply(p, reward)
    if err then return nil, err end
  else
    version = tonumber(redis.call('HGET', KEYS[3], p.vf) or '0')
  end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[5], id)
  local r = ''
  if reward then r = p64(reward) end
  redis.call('HSET', KEYS[2], 'outcome', outcome, 'arm', p.arm, 'reward', r,
             'settled_at', ARGV[4], 'model_version', version)
  redis.call('PEXPIRE', KEYS[2], ARGV[11])
  local out = {outcome, p.arm, r, version, ARGV[4], p.segment}
  if delta then
    for i = 1, 4 do out[6 + i] = delta[i] end
  end
  return out, nil
end

-- The expiry rule. A default reward the model refuses (pipeline changed, non-finite sums)
-- drops the decision instead: a sweeper retrying it would meet the same refusal forever.
local function expiry(p)
  if ARGV[5] == '' then return finish(p, 'dropped', false) end
  local res, err = finish(p, 'defaulted', f64(ARGV[5]))
  if err then return finish(p, 'dropped', false) end
  return res, err
end

-- The policy's own slot after the migration to per-segment slots (layout.py): a replica still
-- on key_layout = "policy" must not learn into keys nobody reads any more.
if redis.call('HEXISTS', KEYS[3], 'migrated') == 1 then return {'error', 'migrated', ''} end

local raw = redis.call('HMGET', KEYS[1], 'segment', 'arm', 'x', 'deadline', 'sums_field',
                       'version_field', 'fingerprint_field', 'stamp_field')
local p = nil
if raw[3] then
  p = {segment = raw[1], arm = raw[2], x = raw[3], deadline = f64(raw[4]), sf = raw[5],
       vf = raw[6], ff = raw[7], af = raw[8]}
end

if mode ~= 'feedback' then
  if not p then
    redis.call('ZREM', KEYS[5], id)
    if redis.call('EXISTS', KEYS[2]) == 1 then return {'skip'} end
    return {'lost'}
  end
  if not (p.deadline < now) then return {'skip'} end
  if mode == 'orphan' then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[5], id)
    return {'dropped', p.arm, '', 0, ARGV[4], p.segment}
  end
  local res, err = expiry(p)
  return err or res
end

if p then
  if now <= p.deadline then
    local res, err = finish(p, 'applied', f64(ARGV[3]))
    return err or res
  end
  local res, err = expiry(p)
  if err then return err end
  res[1], res[5] = 'expired', raw[4]
  return res
end

local t = redis.call('HMGET', KEYS[2], 'outcome', 'arm', 'reward', 'settled_at', 'model_version')
if not t[1] then return {'unknown', '', '', 0, '', false} end
local outcome = 'expired'
if t[1] == 'applied' then outcome = 'duplicate' end
return {outcome, t[2], t[3], tonumber(t[5]), t[4], false}
