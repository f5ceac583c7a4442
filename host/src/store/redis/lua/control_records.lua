-- control_records: reads every control record at one instant. Reads only.
-- KEYS: records, revs.
-- ARGV: none.
-- Returns a flat list {name, revision, body, ...}.

local out = {}
local bodies = redis.call('HGETALL', KEYS[1])
for i = 1, #bodies, 2 do
    out[#out + 1] = bodies[i]
    out[#out + 1] = redis.call('HGET', KEYS[2], bodies[i]) or '0'
    out[#out + 1] = bodies[i + 1]
end
return out
