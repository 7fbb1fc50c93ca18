-- load.lua: Route's one read of a model: the version, the fingerprint and the candidates'
-- stamps, plus the sums of exactly the arms whose stamp is newer than the caller's cached one.
-- (Two HMGETs in one round trip: the second needs the first's answer.) For a Route it also
-- checks the policy's segment limit. It writes nothing (record.lua registers the segment).
--
-- KEYS[1]  model     HASH  (version, fingerprint and stamp fields)
-- KEYS[2]  sums      HASH  (one codec sums blob per (segment, arm))
-- KEYS[3]  segments  ZSET  (segment -> last use, unix s)
-- ARGV[1]  the segment's version field
-- ARGV[2]  the segment's fingerprint field
-- ARGV[3]  the candidates' stamp fields, '\n'-separated (field names contain no whitespace)
-- ARGV[4]  their sums fields, '\n'-separated, same order
-- ARGV[5]  the caller's cached stamp per candidate, ','-separated, same order (-1: none)
-- ARGV[6]  the segment
-- ARGV[7]  the policy's segment limit to check for a new segment (0 = none: a plain read)
-- Returns {version, fingerprint, {stamp per candidate}, {sums blob per candidate}}: nil where
-- a field is absent; a blob only where the stored stamp is newer than the cached one.
-- Or {'full', count}: the segment is new and the policy has its limit already.

local limit = tonumber(ARGV[7])
if limit > 0 and not redis.call('ZSCORE', KEYS[3], ARGV[6]) then
  local count = redis.call('ZCARD', KEYS[3])
  if count >= limit then return {'full', count} end
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
