-- load.lua: Route's one read of a model: the version, the fingerprint and the candidates'
-- stamps, plus the sums of exactly the arms whose stamp is newer than the caller's cached one.
-- (Two HMGETs in one round trip: the second needs the first's answer.) With a `now`, it also
-- registers the segment (last use) and enforces the policy's segment limit.
--
-- KEYS[1]  model     HASH  (version, fingerprint and stamp fields)
-- KEYS[2]  sums      HASH  (one codec sums blob per (segment, arm))
-- KEYS[3]  segments  ZSET  (segment -> last use, unix s)
-- KEYS[4]  segarms   HASH  (segment -> its sums fields; see segment.lua)
-- ARGV[1]  the segment's version field
-- ARGV[2]  the segment's fingerprint field
-- ARGV[3]  the candidates' stamp fields, '\n'-separated (field names contain no whitespace)
-- ARGV[4]  their sums fields, '\n'-separated, same order
-- ARGV[5]  the caller's cached stamp per candidate, ','-separated, same order (-1: none)
-- ARGV[6]  the segment
-- ARGV[7]  now, unix s ('' = a plain read: no registration, no limit)
-- ARGV[8]  the policy's segment limit (0 = none)
-- ARGV[9]  at the limit, a new segment is: 'refuse'd, or 'evict's the least recently used
-- ARGV[10] refresh a known segment's last use only if older than this many seconds
-- Returns {version, fingerprint, {stamp per candidate}, {sums blob per candidate}}: nil where
-- a field is absent; a blob only where the stored stamp is newer than the cached one.
-- Or {'full', count}: a new segment refused at the limit (nothing was changed).

if ARGV[7] ~= '' then
  local now = tonumber(ARGV[7])
  local seen = redis.call('ZSCORE', KEYS[3], ARGV[6])
  if not seen then
    local limit = tonumber(ARGV[8])
    if limit > 0 then
      local count = redis.call('ZCARD', KEYS[3])
      if count >= limit then
        if ARGV[9] ~= 'evict' then return {'full', count} end
        local oldest = redis.call('ZRANGE', KEYS[3], 0, count - limit)
        for _, segment in ipairs(oldest) do
          forget_segment(KEYS[1], KEYS[2], KEYS[3], KEYS[4], segment)
        end
      end
    end
    redis.call('ZADD', KEYS[3], now, ARGV[6])
  elseif now - tonumber(seen) > tonumber(ARGV[10]) then
    redis.call('ZADD', KEYS[3], now, ARGV[6])
  end
end

local stamp_fields, sums_fields, cached = {}, {}, {}
for f in string.gmatch(ARGV[3], '[^\n]+') do stamp_fields[#stamp_fields + 1] = f end
for f in string.gmatch(ARGV[4], '[^\n]+') do sums_fields[#sums_fields + 1] = f end
for s in string.gmatch(ARGV[5], '[^,]+') do cached[#cached + 1] = tonumber(s) end

local head = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2], unpack(stamp_fields))
local stamps, blobs, stale, names = {}, {}, {}, {}
for i = 1, #stamp_fields do
  local stamp = head[i + 2]
  stamps[i] = stamp
  blobs[i] = false
  if stamp and tonumber(stamp) > cached[i] then
    stale[#stale + 1] = i
    names[#names + 1] = sums_fields[i]
  end
end
if #stale > 0 then
  local got = redis.call('HMGET', KEYS[2], unpack(names))
  for j, i in ipairs(stale) do blobs[i] = got[j] end
end
return {head[1], head[2], stamps, blobs}
