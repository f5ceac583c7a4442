-- import_sessions: stores exported sessions, each with its index entries,
-- unless its key exists.
-- KEYS: deadlines.
-- ARGV: base, then per session: hash, r, v, l, a, i, d, u, pexpireat.
-- Returns {1 (written) | 0 (exists), ...}.

local base = ARGV[1]
local out = {}
for j = 2, #ARGV, 9 do
  local hash, l, d, u, exp = ARGV[j], ARGV[j + 3], ARGV[j + 6], ARGV[j + 7], ARGV[j + 8]
  local sk = base .. 's:' .. hash
  if redis.call('EXISTS', sk) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', sk, 'r', ARGV[j + 1], 'v', ARGV[j + 2], 'l', l, 'a', ARGV[j + 4],
      'i', ARGV[j + 5], 'd', d, 'u', u)
    redis.call('PEXPIREAT', sk, exp)
    redis.call('ZADD', KEYS[1], d, hash)
    if u ~= '' then
      local uk = base .. 'u:' .. u
      redis.call('ZADD', uk, l, hash)
      extend(uk, exp)
    end
    out[#out + 1] = 1
  end
end
return out
