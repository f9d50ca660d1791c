-- wrk script: POST the JSON body in the file named by WRK_BODY (default body.json) to /predict.
local path = os.getenv("WRK_BODY") or "body.json"
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

-- No response() callback: wrk would hand every response to Lua, which costs the load
-- generator CPU that the two-worker runs share with the server. wrk counts statuses >= 400
-- itself (summary.errors.status).
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d non2xx_seen=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status,
    summary.errors.status, summary.requests))
end
