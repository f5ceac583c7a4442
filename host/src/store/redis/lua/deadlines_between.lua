-- deadlines_between: reads the sessions whose deadline is in (after, until].
-- KEYS: deadlines.
-- ARGV: base, after, until, max.
-- Returns {r, v, l, ...}, earliest deadline first. Changes nothing: a
--   member whose session key is gone is skipped (the sweeper removes it).

local out = {}
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], ARGV[3], 'LIMIT', 0, ARGV[4])
for _, m in ipairs(members) do
  local f = redis.call('HMGET', ARGV[1] .. 's:' .. m, 'r', 'v', 'l')
  if f[1] then push3(out, f) end
end
return out
