-- take_expired: takes out up to max sessions past their deadline.
-- KEYS: deadlines.
-- ARGV: base, now, max, queue ends.
-- Returns {r, v, l, ...}.

local base, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])) do
  local sk = base .. 's:' .. m
  local f = redis.call('HMGET', sk, 'r', 'v', 'l', 'd', 'u', 'a', 'i')
  if not f[1] then
    redis.call('ZREM', KEYS[1], m)
  elseif tonumber(f[4]) > now then
    redis.call('ZADD', KEYS[1], f[4], m)
  else
    push3(out, f)
    local why = 'idle-timeout'
    if tonumber(f[6]) <= tonumber(f[3]) + tonumber(f[7]) then why = 'expired' end
    queue_end(base, ARGV[4], f, why, ARGV[2])
    redis.call('DEL', sk)
    redis.call('ZREM', KEYS[1], m)
    if f[5] and f[5] ~= '' then redis.call('ZREM', base .. 'u:' .. f[5], m) end
  end
end
return out
