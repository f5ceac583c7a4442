-- prune_consumers: deletes the group's consumers that hold nothing and were
-- idle longer than given.
-- KEYS: ends.
-- ARGV: consumer to keep, idle ms.
-- Returns how many were deleted.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], 'ends')
if cs['err'] then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[1] and tonumber(f['pending']) == 0
      and tonumber(f['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'ends', f['name'])
    n = n + 1
  end
end
return n
