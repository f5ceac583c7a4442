-- Helpers shared by the scripts: put before the body of each one.
-- Reads no KEYS or ARGV; defines MAX_MS, fmt, extend, push3 and queue_end.

local MAX_MS = 9007199254740991
local function fmt(n) return string.format('%.0f', n) end
-- Pushes the key's expiry out to `at` (ms) unless it already lasts longer.
local function extend(key, at)
  if redis.call('PEXPIRETIME', key) < tonumber(at) then
    redis.call('PEXPIREAT', key, at)
  end
end
local function push3(out, f)
  out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]
end
-- Queues the end job of a session just taken out (f = r, v, l) unless `on`
-- is '0'; any value but '1' is the ending request's traceparent, kept as
-- the job's `tp`. The stream and its consumer group are created together.
local function queue_end(base, on, f, why, now)
  if on == '0' then return end
  local key = base .. 'ends'
  if redis.call('EXISTS', key) == 0 then
    redis.call('XGROUP', 'CREATE', key, 'ends', '0', 'MKSTREAM')
  end
  if on == '1' then
    redis.call('XADD', key, '*', 'r', f[1], 'v', f[2], 'l', f[3], 'why', why, 'at', now)
  else
    redis.call('XADD', key, '*', 'r', f[1], 'v', f[2], 'l', f[3], 'why', why, 'at', now,
      'tp', on)
  end
end
