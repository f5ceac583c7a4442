-- dump_sessions: one ZSCAN step over the deadlines index, with the sessions
-- its members name (those past their deadline too).
-- KEYS: deadlines.
-- ARGV: base, cursor, count.
-- Returns {next cursor, r, v, l, ...}; a member whose key is gone is left out.

local base = ARGV[1]
local r = redis.call('ZSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local out = {r[1]}
local members = r[2]
for j = 1, #members, 2 do
  local f = redis.call('HMGET', base .. 's:' .. members[j], 'r', 'v', 'l')
  if f[1] then push3(out, f) end
end
return out
