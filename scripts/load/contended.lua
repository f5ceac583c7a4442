-- PATCH /v1/sessions/{id} on the one session of LOAD_IDS from every
-- connection, without If-Match: each thread sets its own key, `w<thread>`,
-- to a counter.
dofile(os.getenv("LOAD_LUA_DIR") .. "/common.lua")

local headers = headers_with({ ["Content-Type"] = "application/merge-patch+json" })
local path
local n = 0

function init(args)
    path = "/v1/sessions/" .. read_ids()[1]
end

function request()
    n = n + 1
    local body = string.format('{"w%d":%d}', tid, n)
    return wrk.format("PATCH", path, headers, body)
end
