-- kv_delete: deletes a plugin's kv entry and takes it out of the plugin's
-- usage (see kv_set.lua).
-- KEYS: the entry's value key, sizes, expiry, total.
-- ARGV: base, key.
-- Returns 1 if the entry existed (and had not lapsed), else 0.

local vkey, sizes, expiry, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local key = ARGV[2]
local size = redis.call('HGET', sizes, key)
if size then
  redis.call('HDEL', sizes, key)
  redis.call('DECRBY', total, size)
end
redis.call('ZREM', expiry, key)
return redis.call('DEL', vkey)
