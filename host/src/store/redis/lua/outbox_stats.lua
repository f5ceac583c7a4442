-- outbox_stats: counts the webhook deliveries held and due, and finds when
-- the oldest was queued. Reads only.
-- KEYS: whq, whc.
-- ARGV: now.
-- Returns {held, due, oldest created at (nil when empty)}.

local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local oldest = false
if first[2] then oldest = fmt(tonumber(first[2])) end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]), oldest}
