-- outbox_remove: removes webhook deliveries; unknown ids are ignored.
-- KEYS: whq, whc.
-- ARGV: base, then the delivery ids.
-- Returns how many deliveries were removed.

local base = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  n = n + redis.call('DEL', base .. 'wh:' .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return n
