-- POST /v1/sessions, a new user for every request (the single-session
-- plugin denies a user's second session). With LOAD_IDS_OUT, each thread
-- writes the ids it created to LOAD_IDS_OUT.<thread>.
dofile(os.getenv("LOAD_LUA_DIR") .. "/common.lua")

local headers = headers_with({ ["Content-Type"] = "application/json" })
local n = 0
local out = nil
local run = os.getenv("LOAD_RUN") or "run"

function init(args)
    local path = os.getenv("LOAD_IDS_OUT")
    if path and #path > 0 then
        out = assert(io.open(path .. "." .. tid, "w"))
    end
end

function request()
    n = n + 1
    local body = string.format(
        '{"user":"load-%s-%d-%d","roles":["Operator"],"data":{"theme":"dark","cart":{"items":1}}}',
        run, tid, n)
    return wrk.format("POST", "/v1/sessions", headers, body)
end

local written = 0
function response(status, headers, body)
    if out and status == 201 then
        local id = body:match('"id":"([%w_%-]+)"')
        if id then
            out:write(id, "\n")
            written = written + 1
            if written % 1000 == 0 then
                out:flush()
            end
        end
    end
end
