-- claim_ends: hands abandoned end jobs over to the consumer, then new ones.
-- KEYS: ends.
-- ARGV: consumer, max, reclaim after (ms).
-- Returns {abandoned entries taken over, new entries, deliveries of each
--   abandoned entry}, each entry {id, {field, value, ...}}. A new entry is
--   on its first delivery.

if redis.call('EXISTS', KEYS[1]) == 0 then return {{}, {}, {}} end
local ac = redis.pcall('XAUTOCLAIM', KEYS[1], 'ends', ARGV[1], ARGV[3], '0-0', 'COUNT', ARGV[2])
if ac['err'] then
  if not string.find(ac['err'], 'NOGROUP', 1, true) then return ac end
  redis.call('XGROUP', 'CREATE', KEYS[1], 'ends', '0')
  ac = {'0-0', {}}
end
local old, counts = {}, {}
for _, e in ipairs(ac[2]) do
  if type(e) == 'table' then
    old[#old + 1] = e
    -- XAUTOCLAIM counted this delivery; the pending entry holds the count.
    local p = redis.call('XPENDING', KEYS[1], 'ends', e[1], e[1], 1)
    counts[#counts + 1] = (p[1] and p[1][4]) or 1
  end
end
local fresh = {}
local left = tonumber(ARGV[2]) - #old
if left > 0 then
  local r = redis.call('XREADGROUP', 'GROUP', 'ends', ARGV[1], 'COUNT', left,
    'STREAMS', KEYS[1], '>')
  if r then fresh = r[1][2] end
end
return {old, fresh, counts}
