-- touch: slides a live session's idle deadline and bumps its version.
-- KEYS: session, deadlines.
-- ARGV: base, hash, now, grace.
-- Returns nil | {r, v, l}.

local base, hash, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'r', 'v', 'l', 'a', 'i', 'd', 'u')
if not f[1] or tonumber(f[6]) <= now then return false end
local l = math.max(tonumber(f[3]), now)
local d = math.min(tonumber(f[4]), l + tonumber(f[5]), MAX_MS)
local v, ls, ds = fmt(tonumber(f[2]) + 1), fmt(l), fmt(d)
local exp = fmt(math.min(d + tonumber(ARGV[4]), MAX_MS))
redis.call('HSET', KEYS[1], 'v', v, 'l', ls, 'd', ds)
redis.call('PEXPIREAT', KEYS[1], exp)
redis.call('ZADD', KEYS[2], ds, hash)
if f[7] and f[7] ~= '' then
  local uk = base .. 'u:' .. f[7]
  redis.call('ZADD', uk, ls, hash)
  extend(uk, exp)
end
return {f[1], v, ls}
