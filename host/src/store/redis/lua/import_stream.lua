-- import_stream: appends exported entries to a stream under their own ids.
-- KEYS: the stream (ends or audit).
-- ARGV: 'ends' | 'audit', max len (audit), then per entry: id, field count,
--   fields and values.
-- Returns {1 (written) | 0 (exists) | -1 (not after the stream's last id), ...}.

local ends = ARGV[1] == 'ends'
if ends and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'ends', '0', 'MKSTREAM')
end
local out = {}
local j = 3
while j <= #ARGV do
  local id, n = ARGV[j], tonumber(ARGV[j + 1])
  local fields = {}
  for k = 1, n do fields[k] = ARGV[j + 1 + k] end
  j = j + 2 + n
  if #redis.call('XRANGE', KEYS[1], id, id) > 0 then
    out[#out + 1] = 0
  else
    local r
    if ends then
      r = redis.pcall('XADD', KEYS[1], id, unpack(fields))
    else
      r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id, unpack(fields))
    end
    if type(r) == 'table' and r['err'] then
      if not string.find(r['err'], 'ID specified in XADD', 1, true) then return r end
      out[#out + 1] = -1
    else
      out[#out + 1] = 1
    end
  end
end
return out
