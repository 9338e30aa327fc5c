-- wrk script: POST the JSON file named by the first script argument, then print one line
-- "BENCH {...}" with the request count, the errors and the latency percentiles (microseconds)
-- that bench/run.py reads (wrk's own --latency report has no p95).
--   wrk -t2 -c4 -d10s -s bench/post.lua http://127.0.0.1:8080/cds-services/x -- body.json

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.body = file:read("*a")
  file:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
    '"p50_us": %.0f, "p95_us": %.0f, "p99_us": %.0f, "max_us": %.0f, "mean_us": %.1f, ' ..
    '"connect_errors": %.0f, "read_errors": %.0f, "write_errors": %.0f, ' ..
    '"status_errors": %.0f, "timeouts": %.0f}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
