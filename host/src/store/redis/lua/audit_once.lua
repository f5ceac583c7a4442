-- audit_once: appends to the audit stream unless the idempotency key was
-- used already.
-- KEYS: audit, idempotency key.
-- ARGV: max len, key ttl (ms), fields...
-- Returns the id written now or by the first append with the key.

local prev = redis.call('GET', KEYS[2])
if prev then return prev end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
return id
