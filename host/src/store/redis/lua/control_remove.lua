-- control_remove: removes one control record if its revision is still the
-- expected one, taking the next control revision, and tells every host.
-- KEYS: rev, records, revs.
-- ARGV: name, expected revision, channel.
-- Returns {1, new revision} or {0, actual revision (0: none)}.

local actual = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if actual == 0 or actual ~= tonumber(ARGV[2]) then return {0, actual} end
local rev = redis.call('INCR', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[3], rev)
return {1, rev}
