-- update: replaces a live session if its version is the expected one,
-- moving it to the new key when its token hash changed.
-- KEYS: old session, new session, deadlines, [new user].
-- ARGV: base, old hash, new hash, expected version, r, v, l, a, i, d, u,
--   pexpireat, now.
-- Returns {'nf'} | {'vm', r, v, l} | {'exists'} | {'ok'}.

local base, old, new = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', KEYS[1], 'r', 'v', 'l', 'd', 'u')
if not f[1] or tonumber(f[4]) <= tonumber(ARGV[13]) then return {'nf'} end
if tonumber(f[2]) ~= tonumber(ARGV[4]) then return {'vm', f[1], f[2], f[3]} end
local moved = old ~= new
if moved then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], old)
end
local olduser = f[5] or ''
if olduser ~= '' and (moved or olduser ~= ARGV[11]) then
  redis.call('ZREM', base .. 'u:' .. olduser, old)
end
redis.call('HSET', KEYS[2], 'r', ARGV[5], 'v', ARGV[6], 'l', ARGV[7], 'a', ARGV[8],
  'i', ARGV[9], 'd', ARGV[10], 'u', ARGV[11])
redis.call('PEXPIREAT', KEYS[2], ARGV[12])
redis.call('ZADD', KEYS[3], ARGV[10], new)
if KEYS[4] then
  redis.call('ZADD', KEYS[4], ARGV[7], new)
  extend(KEYS[4], ARGV[12])
end
return {'ok'}
