-- end_queue: counts the end jobs.
-- KEYS: ends.
-- ARGV: none.
-- Returns {waiting, claimed}.

if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local len = redis.call('XLEN', KEYS[1])
local p = redis.pcall('XPENDING', KEYS[1], 'ends')
local claimed = 0
if not p['err'] then claimed = p[1] end
return {len - claimed, claimed}
