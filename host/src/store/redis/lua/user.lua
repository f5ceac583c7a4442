-- user: lists or takes out a user's live sessions. Drops index members
-- whose key is gone.
-- KEYS: user, deadlines.
-- ARGV: base, now, take ('1' removes the live sessions), reason, queue ends.
-- Returns {r, v, l, ...}.

local base, now, take = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local sk = base .. 's:' .. m
  local f = redis.call('HMGET', sk, 'r', 'v', 'l', 'd')
  if not f[1] then
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', KEYS[2], m)
  elseif tonumber(f[4]) > now then
    push3(out, f)
    if take then
      queue_end(base, ARGV[5], f, ARGV[4], ARGV[2])
      redis.call('DEL', sk)
      redis.call('ZREM', KEYS[1], m)
      redis.call('ZREM', KEYS[2], m)
    end
  end
end
return out
