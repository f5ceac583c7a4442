-- GET /v1/sessions/{id}, cycling through LOAD_IDS (each thread from its own
-- starting point).
dofile(os.getenv("LOAD_LUA_DIR") .. "/common.lua")

local ids, i

function init(args)
    ids = read_ids()
    i = math.floor(#ids * tid / thread_count())
end

function request()
    i = i % #ids + 1
    return wrk.format("GET", "/v1/sessions/" .. ids[i])
end
