-- dead_letters: counts the dead letters and reads the newest.
-- KEYS: dead.
-- ARGV: how many to read.
-- Returns {count, entries newest first}, each entry {id, {field, value, ...}}.

local count = redis.call('XLEN', KEYS[1])
if count == 0 or tonumber(ARGV[1]) == 0 then return {count, {}} end
return {count, redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])}
