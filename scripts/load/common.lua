-- Shared by the wrk scripts of scripts/load.sh (loaded with dofile).
--
-- Environment: LOAD_KEY (the API key), LOAD_THREADS (wrk -t), LOAD_RUN (a
-- tag that keeps user names unique across runs), LOAD_IDS (a file of session
-- ids, one a line, for get/update/delete), LOAD_IDS_OUT (create: where each
-- thread writes the ids it created, as LOAD_IDS_OUT.<thread>).
--
-- Every script ends with one machine-readable line:
--   RESULT requests=N duration_us=N non2xx=N connect=N read=N write=N timeout=N p50_us=N p99_us=N

wrk.headers["Authorization"] = "Bearer " .. (os.getenv("LOAD_KEY") or "")
wrk.headers["User-Agent"] = "sessiond-load"

-- Number the threads: setup runs in the main state, once per thread, before
-- init runs in the thread's own state.
local next_tid = 0
function setup(thread)
    thread:set("tid", next_tid)
    next_tid = next_tid + 1
end

-- wrk.format uses the headers it is given instead of wrk.headers, not with
-- them: every request with headers of its own goes through this.
function headers_with(extra)
    local h = {}
    for k, v in pairs(wrk.headers) do
        h[k] = v
    end
    for k, v in pairs(extra) do
        h[k] = v
    end
    return h
end

function thread_count()
    return tonumber(os.getenv("LOAD_THREADS") or "1") or 1
end

-- Every session id of LOAD_IDS.
function read_ids()
    local path = os.getenv("LOAD_IDS")
    local ids = {}
    local f = assert(io.open(path, "r"), "cannot open LOAD_IDS " .. tostring(path))
    for line in f:lines() do
        if #line > 0 then
            ids[#ids + 1] = line
        end
    end
    f:close()
    assert(#ids > 0, "LOAD_IDS is empty")
    return ids
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d p50_us=%.0f p99_us=%.0f\n",
        summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
        latency:percentile(50), latency:percentile(99)))
end
