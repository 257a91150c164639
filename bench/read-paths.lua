-- wrk script of bench/read.ts: rotates GET requests over the paths listed (one per line) in the file given as
-- first script argument, and prints one machine-readable line "WRKJSON {...}" at the end (from appr-bench).
-- usage: wrk -t2 -c32 -d10s --latency -s wrk-paths.lua http://127.0.0.1:5055 -- /tmp/paths.txt
local reqs = {}
local idx = 0
local tcount = 0

function setup(thread)
  tcount = tcount + 1
  thread:set("tid", tcount)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then reqs[#reqs + 1] = wrk.format("GET", line) end
  end
  -- start each thread at a different offset so threads do not walk the list in lockstep
  idx = ((tid or 1) * 7919) % #reqs
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f,"stdev":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, latency.stdev))
end
