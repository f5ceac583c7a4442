-- merge: applies an RFC 7396 merge patch to a live session's data, slides
-- its idle deadline and bumps its version, in one step.
-- KEYS: session, deadlines.
-- ARGV: base, hash, patch (a JSON object), now, grace, max data depth,
--   max record bytes.
-- Returns {'nf'} | {'deep', depth} | {'big', bytes} | {'ok', r, v, l}.
--
-- The record is not decoded with cjson, which would change integers above
-- 2^53 and floats such as 0.1 and turn [] into {}. Every value stays the
-- text it was stored or sent as; only the objects the patch reaches into
-- (the record, its data, and objects inside the data that the patch
-- merges into) are split into their members, and the record is joined
-- again from those texts. Keys are compared as their JSON text: the host
-- writes records and patches with the same encoder.

local find, sub, byte = string.find, string.sub, string.byte
local QUOTE, OPEN_OBJECT, CLOSE_OBJECT, OPEN_ARRAY = 34, 123, 125, 91

-- The index of the first character at or after i that is not blank.
local function skip(s, i)
  return find(s, '[^ \t\r\n]', i) or error('merge: truncated JSON')
end

-- The index of the quote that closes the string opened at i.
local function string_end(s, i)
  local j = i + 1
  while true do
    local k = find(s, '["\\]', j) or error('merge: unterminated string')
    if byte(s, k) == QUOTE then return k end
    j = k + 2
  end
end

-- The index of the last character of the value starting at i, and how
-- deeply it nests (containers counted, as json.rs counts them).
local function value_end(s, i)
  local c = byte(s, i)
  if c == QUOTE then return string_end(s, i), 0 end
  if c == OPEN_OBJECT or c == OPEN_ARRAY then
    local level, deepest, j = 0, 0, i
    while true do
      local k = find(s, '[%[%]{}"]', j) or error('merge: unterminated container')
      local b = byte(s, k)
      if b == QUOTE then
        k = string_end(s, k)
      elseif b == OPEN_OBJECT or b == OPEN_ARRAY then
        level = level + 1
        if level > deepest then deepest = level end
      else
        level = level - 1
        if level == 0 then return k, deepest end
      end
      j = k + 1
    end
  end
  local k = find(s, '[,%]}%s]', i)
  return (k or #s + 1) - 1, 0
end

local function empty()
  return {keys = {}, listed = {}, vals = {}, deps = {}}
end

-- Sets member `key` (its JSON text) of object `o` to `val`: a value's text,
-- or an object split into members; `dep` is a text's depth.
local function set(o, key, val, dep)
  if not o.listed[key] then
    o.listed[key] = true
    o.keys[#o.keys + 1] = key
  end
  o.vals[key], o.deps[key] = val, dep
end

-- The members of the object whose text starts at i.
local function members(s, i)
  local o = empty()
  local j = skip(s, i + 1)
  if byte(s, j) == CLOSE_OBJECT then return o end
  while true do
    if byte(s, j) ~= QUOTE then error('merge: expected a member name') end
    local ke = string_end(s, j)
    local key = sub(s, j, ke)
    j = skip(s, skip(s, ke + 1) + 1)
    local ve, dep = value_end(s, j)
    set(o, key, sub(s, j, ve), dep)
    j = skip(s, ve + 1)
    if byte(s, j) == CLOSE_OBJECT then return o end
    j = skip(s, j + 1)
  end
end

-- Merges the patch `p` (split into members) into the object `o`.
local function merge(o, p)
  for _, key in ipairs(p.keys) do
    local v = p.vals[key]
    if v == 'null' then
      o.vals[key], o.deps[key] = nil, nil
    elseif byte(v, 1) == OPEN_OBJECT then
      local t, inner = o.vals[key], nil
      if type(t) == 'table' then
        inner = t
      elseif t and byte(t, 1) == OPEN_OBJECT then
        inner = members(t, 1)
      else
        inner = empty()
      end
      merge(inner, members(v, 1))
      set(o, key, inner, nil)
    else
      set(o, key, v, p.deps[key])
    end
  end
end

-- The text of object `o` and how deeply it nests.
local function join(o)
  local parts, deepest = {}, 0
  for _, key in ipairs(o.keys) do
    local v, dep = o.vals[key], o.deps[key]
    if v ~= nil then
      if type(v) == 'table' then v, dep = join(v) end
      if dep > deepest then deepest = dep end
      parts[#parts + 1] = key .. ':' .. v
    end
  end
  return '{' .. table.concat(parts, ',') .. '}', deepest + 1
end

local base, hash, now = ARGV[1], ARGV[2], tonumber(ARGV[4])
local f = redis.call('HMGET', KEYS[1], 'r', 'v', 'l', 'a', 'i', 'd', 'u')
if not f[1] or tonumber(f[6]) <= now then return {'nf'} end
local l = math.max(tonumber(f[3]), now)
local d = math.min(tonumber(f[4]), l + tonumber(f[5]), MAX_MS)
local v, ls, ds = fmt(tonumber(f[2]) + 1), fmt(l), fmt(d)

local record = members(f[1], skip(f[1], 1))
local stored = record.vals['"data"']
local data
if stored and byte(stored, 1) == OPEN_OBJECT then data = members(stored, 1) else data = empty() end
merge(data, members(ARGV[3], skip(ARGV[3], 1)))
local text, depth = join(data)
if depth > tonumber(ARGV[6]) then return {'deep', depth} end
set(record, '"data"', text, depth)
set(record, '"version"', v, 0)
set(record, '"last_seen_at"', ls, 0)
local r = join(record)
if #r > tonumber(ARGV[7]) then return {'big', #r} end

local exp = fmt(math.min(d + tonumber(ARGV[5]), MAX_MS))
redis.call('HSET', KEYS[1], 'r', r, 'v', v, 'l', ls, 'd', ds)
redis.call('PEXPIREAT', KEYS[1], exp)
redis.call('ZADD', KEYS[2], ds, hash)
if f[7] and f[7] ~= '' then
  local uk = base .. 'u:' .. f[7]
  redis.call('ZADD', uk, ls, hash)
  extend(uk, exp)
end
return {'ok', r, v, ls}
