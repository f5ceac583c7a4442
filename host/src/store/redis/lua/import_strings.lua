-- import_strings: sets a tenant's string keys (kv entries, idempotency keys)
-- that do not exist.
-- KEYS: the first of the keys (it picks the node).
-- ARGV: per key: key, value, expiry (ms since the epoch; '' for none).
-- Returns {1 (written) | 0 (exists), ...}.

local out = {}
for j = 1, #ARGV, 3 do
  local ok
  if ARGV[j + 2] == '' then
    ok = redis.call('SET', ARGV[j], ARGV[j + 1], 'NX')
  else
    ok = redis.call('SET', ARGV[j], ARGV[j + 1], 'NX', 'PXAT', ARGV[j + 2])
  end
  if ok then out[#out + 1] = 1 else out[#out + 1] = 0 end
end
return out
