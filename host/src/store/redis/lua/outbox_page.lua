-- outbox_page: a page of the tenant's webhook deliveries for an export, by
-- ZSCAN over the due queue (so a delivery may come twice while the outbox
-- changes, and every one held throughout comes at least once). Reads only.
-- KEYS: whq.
-- ARGV: base, cursor ('0' from the start), count.
-- Returns {next cursor ('0': done), then for each delivery: id, message id,
--   url, body, created at, due at, attempts, error (nil when none)}.

local base = ARGV[1]
local page = redis.call('ZSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local out = {page[1]}
local members = page[2]
for i = 1, #members, 2 do
  local id, due = members[i], members[i + 1]
  local f = redis.call('HMGET', base .. 'wh:' .. id, 'm', 'u', 'b', 'c', 'n', 'e')
  if f[1] then
    out[#out + 1] = id
    out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]; out[#out + 1] = f[4]
    out[#out + 1] = due
    out[#out + 1] = f[5]
    out[#out + 1] = f[6]
  end
end
return out
