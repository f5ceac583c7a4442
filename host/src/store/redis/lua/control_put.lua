-- control_put: writes one control record if its revision is still the
-- expected one, taking the next control revision, and tells every host.
-- KEYS: rev, records, revs.
-- ARGV: name, body, expected revision (0: no record yet), channel.
-- Returns {1, new revision} or {0, actual revision (0: none)}.

local actual = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if actual ~= tonumber(ARGV[3]) then return {0, actual} end
local rev = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], rev)
redis.call('PUBLISH', ARGV[4], rev)
return {1, rev}
