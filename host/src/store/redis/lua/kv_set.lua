-- kv_set: writes a plugin's kv entry unless that takes the plugin past its
-- quota; keeps the plugin's usage (entry sizes, expiries, total bytes).
-- KEYS: the entry's value key, sizes (hash: key -> bytes of key plus
--   value), expiry (sorted set: key -> expires at, ms), total (bytes).
-- ARGV: base, key, value, ttl (ms; 0: none), max bytes, max keys, the
--   prefix of the plugin's value keys.
-- Returns {'ok'}, or {'keys', n} / {'bytes', n}: the usage the write would
--   have made, over the quota (nothing written).

local vkey, sizes, expiry, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local key, value, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local max_bytes, max_keys = tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Entries past their TTL no longer count (Redis has dropped their values).
for _, k in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
  local size = redis.call('HGET', sizes, k)
  if size then
    redis.call('HDEL', sizes, k)
    redis.call('DECRBY', total, size)
  end
  redis.call('ZREM', expiry, k)
  redis.call('DEL', ARGV[7] .. k)
end
local old = tonumber(redis.call('HGET', sizes, key) or '')
local new = #key + #value
local keys = redis.call('HLEN', sizes) + (old and 0 or 1)
local bytes = tonumber(redis.call('GET', total) or '0') - (old or 0) + new
if keys > max_keys then return {'keys', fmt(keys)} end
if bytes > max_bytes then return {'bytes', fmt(bytes)} end
if ttl > 0 then
  redis.call('SET', vkey, value, 'PX', ttl)
  redis.call('ZADD', expiry, now + ttl, key)
else
  redis.call('SET', vkey, value)
  redis.call('ZREM', expiry, key)
end
redis.call('HSET', sizes, key, new)
redis.call('INCRBY', total, new - (old or 0))
return {'ok'}
