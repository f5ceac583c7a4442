-- scan_keys: one SCAN step over the keys of the node that holds KEYS[1].
-- KEYS: any key (it picks the node; it is not read).
-- ARGV: cursor, pattern, count.
-- Returns {next cursor, key, ...}.

local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local out = {r[1]}
for _, k in ipairs(r[2]) do out[#out + 1] = k end
return out
