-- dead_letter: moves end jobs from the queue to the dead-letter stream.
-- KEYS: ends, dead.
-- ARGV: max len of dead, now, then an id and why for each job.
-- Returns how many moved (unknown and malformed ids are ignored). Each dead entry has the job's `r`, `v`, `l`,
--   its reason as `reason` and ended-at as `ended_at` (those it has), and
--   `job` (its id), `why`, `at` (now) and `deliveries`.

local names = {r = 'r', v = 'v', l = 'l', why = 'reason', at = 'ended_at'}
local n = 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local e = redis.pcall('XRANGE', KEYS[1], id, id)
  if not e['err'] and e[1] then
    local p = redis.pcall('XPENDING', KEYS[1], 'ends', id, id, 1)
    local deliveries = 0
    if not p['err'] and p[1] then deliveries = p[1][4] end
    local f = {'job', id, 'why', ARGV[i + 1], 'at', ARGV[2], 'deliveries', deliveries}
    local old = e[1][2]
    for j = 1, #old - 1, 2 do
      local name = names[old[j]]
      if name then
        f[#f + 1] = name
        f[#f + 1] = old[j + 1]
      end
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(f))
    redis.call('XACK', KEYS[1], 'ends', id)
    redis.call('XDEL', KEYS[1], id)
    n = n + 1
  end
end
return n
