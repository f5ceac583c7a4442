-- outbox_push: queues webhook deliveries, leaving alone those already held.
-- KEYS: whq, whc.
-- ARGV: base, then for each delivery: id, message id, url, body, created
--   at, due at, attempts, has error ('1' | '0'), error.
-- Returns how many were queued.

local base = ARGV[1]
local n = 0
for i = 2, #ARGV, 9 do
  local id = ARGV[i]
  local key = base .. 'wh:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'm', ARGV[i + 1], 'u', ARGV[i + 2], 'b', ARGV[i + 3],
      'c', ARGV[i + 4], 'n', ARGV[i + 6])
    if ARGV[i + 7] == '1' then redis.call('HSET', key, 'e', ARGV[i + 8]) end
    redis.call('ZADD', KEYS[1], ARGV[i + 5], id)
    redis.call('ZADD', KEYS[2], ARGV[i + 4], id)
    n = n + 1
  end
end
return n
