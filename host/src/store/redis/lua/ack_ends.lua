-- ack_ends: acknowledges end jobs and deletes them.
-- KEYS: ends.
-- ARGV: entry ids.
-- Returns 1.

redis.call('XACK', KEYS[1], 'ends', unpack(ARGV))
redis.call('XDEL', KEYS[1], unpack(ARGV))
return 1
