-- outbox_lease: leases the earliest due webhook deliveries: each is due
-- again at now + lease and counts one more attempt. A queue member whose
-- delivery is gone leaves both queues.
-- KEYS: whq, whc.
-- ARGV: base, now, max, lease (ms).
-- Returns {id, message id, url, body, created at, attempts, error (nil
--   when none), ...}, earliest due first.

local base = ARGV[1]
local due = fmt(math.min(tonumber(ARGV[2]) + tonumber(ARGV[4]), MAX_MS))
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])) do
  local key = base .. 'wh:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  else
    redis.call('ZADD', KEYS[1], due, id)
    local n = redis.call('HINCRBY', key, 'n', 1)
    local f = redis.call('HMGET', key, 'm', 'u', 'b', 'c', 'e')
    out[#out + 1] = id
    out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]; out[#out + 1] = f[4]
    out[#out + 1] = n
    out[#out + 1] = f[5]
  end
end
return out
