-- DELETE /v1/sessions/{id}: thread t takes the ids t, t + T, t + 2T... of
-- LOAD_IDS, each once. Past its last id it starts over; those requests are
-- 404s and show up as non-2xx (load.sh then says there were too few ids).
dofile(os.getenv("LOAD_LUA_DIR") .. "/common.lua")

local ids, i, step

function init(args)
    ids = read_ids()
    step = thread_count()
    i = tid + 1
end

function request()
    if i > #ids then
        i = tid + 1
    end
    local id = ids[i]
    i = i + step
    return wrk.format("DELETE", "/v1/sessions/" .. id)
end
