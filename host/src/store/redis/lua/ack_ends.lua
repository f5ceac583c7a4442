-- ack_ends: acknowledges end jobs and deletes them.
-- KEYS: ends.
-- ARGV: entry ids.
-- Returns the ids that were still in the stream (the others were
--   acknowledged or dead-lettered before, or never existed; malformed ones
--   are ignored too).

local taken = {}
for _, id in ipairs(ARGV) do
  redis.pcall('XACK', KEYS[1], 'ends', id)
  if redis.pcall('XDEL', KEYS[1], id) == 1 then taken[#taken + 1] = id end
end
return taken
