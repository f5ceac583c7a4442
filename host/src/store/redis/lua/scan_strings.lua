-- scan_strings: one SCAN step over a tenant's string keys (kv entries or
-- idempotency keys), with their values and expiry.
-- KEYS: any key of the tenant (it picks the node; it is not read).
-- ARGV: cursor, pattern, count.
-- Returns {next cursor, key, value, PEXPIRETIME (-1: none), ...}; a key gone
--   meanwhile is left out.

local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local out = {r[1]}
for _, k in ipairs(r[2]) do
  if redis.call('TYPE', k)['ok'] == 'string' then
    out[#out + 1] = k
    out[#out + 1] = redis.call('GET', k)
    out[#out + 1] = redis.call('PEXPIRETIME', k)
  end
end
return out
