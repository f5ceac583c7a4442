-- remove: takes a live session out.
-- KEYS: session, deadlines.
-- ARGV: base, hash, now, reason, queue ends, and with an idempotency key:
--   its id, request digest, ttl (ms).
-- Returns nil | {r, v, l} | {'known', request} when the idempotency key is
--   known (then nothing is removed). The key is recorded with the removal.

local base, hash = ARGV[1], ARGV[2]
local once = ARGV[6] and (base .. 'idem:' .. ARGV[6])
if once then
  local known = redis.call('HGET', once, 'q')
  if known then return {'known', known} end
end
local f = redis.call('HMGET', KEYS[1], 'r', 'v', 'l', 'd', 'u')
if not f[1] or tonumber(f[4]) <= tonumber(ARGV[3]) then return false end
queue_end(base, ARGV[5], f, ARGV[4], ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], hash)
if f[5] and f[5] ~= '' then redis.call('ZREM', base .. 'u:' .. f[5], hash) end
if once then
  redis.call('HSET', once, 'q', ARGV[7])
  redis.call('PEXPIRE', once, ARGV[8])
end
return {f[1], f[2], f[3]}
