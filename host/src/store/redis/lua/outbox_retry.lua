-- outbox_retry: makes a held webhook delivery due at a new time and records
-- its last failure. A delivery no longer held is not put back (and any
-- queue member left of it goes).
-- KEYS: the delivery (wh:<id>), whq, whc.
-- ARGV: id, due at, error.
-- Returns 1 if the delivery is held, else 0.

local id = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[2], id)
redis.call('HSET', KEYS[1], 'e', ARGV[3])
return 1
