-- wrk's script for every case of bench/run.py (one wrk thread; see bench/cases.py).
--
-- From the environment:
--   BENCH_METHOD   the method (default POST)
--   BENCH_HEADERS  request headers, one "Name: value" a line
--   BENCH_BODY     the body of every request, or
--   BENCH_BODIES   a file of bodies, one a line, taken in order: one-time inputs (authorization codes,
--                  refresh tokens) minted before the run; past its end the last one is sent again and
--                  counted as "exhausted" (bench/run.py then refuses the figure)
--   BENCH_EXPECT   a string every answer's body must contain (e.g. "result", "access_token")
--   BENCH_REJECT   a string no answer's body may contain (e.g. "isError":true)
-- Every answer that is not 2xx, lacks BENCH_EXPECT or holds BENCH_REJECT is counted as bad, so a broken
-- server cannot look fast. done() prints one line:
--   RESULT req/s p50_ms p99_ms bad socket_errors requests exhausted

wrk.method = os.getenv("BENCH_METHOD") or "POST"
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end
local body = os.getenv("BENCH_BODY") or ""
if body ~= "" then
  wrk.body = body
end
local expect = os.getenv("BENCH_EXPECT") or ""
local reject = os.getenv("BENCH_REJECT") or ""
local bodies_file = os.getenv("BENCH_BODIES") or ""

-- Per-thread counters are globals so that done() (in wrk's main Lua state) can read them with thread:get.
bad = 0
exhausted = 0
local bodies = {}
local next_body = 1
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  if bodies_file ~= "" then
    for line in io.lines(bodies_file) do
      bodies[#bodies + 1] = line
    end
  end
end

if bodies_file ~= "" then
  request = function()
    local b = bodies[next_body]
    if b == nil then
      exhausted = exhausted + 1
      b = bodies[#bodies]
    else
      next_body = next_body + 1
    end
    return wrk.format(nil, nil, nil, b)
  end
end

response = function(status, headers, answer)
  if status < 200 or status > 299 then
    bad = bad + 1
  elseif expect ~= "" and not (answer or ""):find(expect, 1, true) then
    bad = bad + 1
  elseif reject ~= "" and (answer or ""):find(reject, 1, true) then
    bad = bad + 1
  end
end

done = function(summary, latency, requests)
  local b, e = 0, 0
  for _, thread in ipairs(threads) do
    b = b + (thread:get("bad") or 0)
    e = e + (thread:get("exhausted") or 0)
  end
  local errors = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, b,
    errors.connect + errors.read + errors.write + errors.timeout, summary.requests, e))
end
