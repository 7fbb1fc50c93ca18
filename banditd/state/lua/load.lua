-- load.lua: Route's one read of a model: the version, the fingerprint and the candidates'
-- stamps, plus the sums of exactly the arms whose stamp is newer than the caller's cached one.
-- (Two HMGETs in one round trip: the second needs the first's answer.) It writes nothing.
-- Both keys are in the segment's slot; the segment limit (the policy's registry, another slot)
-- is checked by the caller's separate call.
--
-- KEYS[1]  model     HASH  (version, fingerprint and stamp fields)
-- KEYS[2]  sums      HASH  (one codec sums blob per (segment, arm))
-- ARGV[1]  the segment's version field
-- ARGV[2]  the segment's fingerprint field
-- ARGV[3]  the candidates' stamp fields, '\n'-separated (field names contain no whitespace)
-- ARGV[4]  their sums fields, '\n'-separated, same order
-- ARGV[5]  the caller's cached stamp per candidate, ','-separated, same order (-1: none)
-- Returns {version, fingerprint, {stamp per candidate}, {sums blob per candidate}}: nil where
-- a field is absent; a blob only where the stored stamp is newer than the cached one. Or
-- {'migrated'}: this is a policy's own slot whose state moved to per-segment slots (layout.py).

if redis.call('HEXISTS', KEYS[1], 'migrated') == 1 then return {'migrated'} end  -- (settle.lua)

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
