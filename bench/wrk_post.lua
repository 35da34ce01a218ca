-- wrk script for bench/router_bench.py: POST a fixed OpenAI chat body and print one machine-readable line.
--   WRK_BODY_FILE      path of the JSON body to send (required)
--   WRK_AFFINITY_KEYS  "1": send a different X-Affinity-Key header on every request (a per-thread counter)
local f = assert(io.open(assert(os.getenv("WRK_BODY_FILE"), "WRK_BODY_FILE not set"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

if os.getenv("WRK_AFFINITY_KEYS") == "1" then
  local n = 0
  request = function()
    n = n + 1
    wrk.headers["X-Affinity-Key"] = "key-" .. n
    return wrk.format()
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JSON {\"requests\":%d,\"duration_us\":%d,\"errors\":%d,\"non2xx\":%d,\"p50\":%d,\"p99\":%d}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status, e.status,
    latency:percentile(50), latency:percentile(99)))
end
