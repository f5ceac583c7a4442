-- create: stores a new session, first ending the user's least recently used
-- sessions when the limit is reached and the policy is 'evict'.
-- KEYS: session, deadlines, [user].
-- ARGV: base, hash, r, v, l, a, i, d, u, pexpireat, now, max (-1: no limit),
--   policy ('deny' | 'evict'), queue ends ('0', '1' or a traceparent), the
--   tenant's quota of stored sessions (-1: none), and with an idempotency
--   key: its id, request digest, sealed token, ttl (ms).
-- Returns {'exists'} | {'quota', stored} | {'limit', active} |
--   {'ok', r, v, l, ...evicted} |
--   {'known', request, r, sealed} when the idempotency key is known (then
--   nothing is written). The key is recorded with the session it guards.

local base, hash, now = ARGV[1], ARGV[2], tonumber(ARGV[11])
local once = ARGV[16] and (base .. 'idem:' .. ARGV[16])
if once then
  local known = redis.call('HMGET', once, 'q', 'r', 't')
  if known[1] then return {'known', known[1], known[2], known[3]} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local quota = tonumber(ARGV[15])
if quota >= 0 then
  local stored = redis.call('ZCARD', KEYS[2])
  if stored >= quota then return {'quota', stored} end
end
local out = {'ok'}
local max = tonumber(ARGV[12])
if KEYS[3] and max >= 0 then
  local live = {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    local d = redis.call('HGET', base .. 's:' .. m, 'd')
    if not d then
      redis.call('ZREM', KEYS[3], m)
      redis.call('ZREM', KEYS[2], m)
    elseif tonumber(d) > now then
      live[#live + 1] = m
    end
  end
  if #live >= max then
    if ARGV[13] ~= 'evict' or max == 0 then return {'limit', #live} end
    for j = 1, #live - max + 1 do
      local m = live[j]
      local sk = base .. 's:' .. m
      local f = redis.call('HMGET', sk, 'r', 'v', 'l')
      push3(out, f)
      queue_end(base, ARGV[14], f, 'evicted', ARGV[11])
      redis.call('DEL', sk)
      redis.call('ZREM', KEYS[3], m)
      redis.call('ZREM', KEYS[2], m)
    end
  end
end
redis.call('HSET', KEYS[1], 'r', ARGV[3], 'v', ARGV[4], 'l', ARGV[5], 'a', ARGV[6],
  'i', ARGV[7], 'd', ARGV[8], 'u', ARGV[9])
redis.call('PEXPIREAT', KEYS[1], ARGV[10])
redis.call('ZADD', KEYS[2], ARGV[8], hash)
if KEYS[3] then
  redis.call('ZADD', KEYS[3], ARGV[5], hash)
  extend(KEYS[3], ARGV[10])
end
if once then
  redis.call('HSET', once, 'q', ARGV[17], 'r', ARGV[3], 't', ARGV[18])
  redis.call('PEXPIRE', once, ARGV[19])
end
return out
