-- PATCH /v1/sessions/{id} with a small merge patch, cycling through LOAD_IDS
-- (each thread from its own starting point).
dofile(os.getenv("LOAD_LUA_DIR") .. "/common.lua")

local headers = headers_with({ ["Content-Type"] = "application/merge-patch+json" })
local ids, i
local n = 0

function init(args)
    ids = read_ids()
    i = math.floor(#ids * tid / thread_count())
end

function request()
    i = i % #ids + 1
    n = n + 1
    local body = string.format('{"cart":{"items":%d},"seen":%d}', n % 100, n)
    return wrk.format("PATCH", "/v1/sessions/" .. ids[i], headers, body)
end
