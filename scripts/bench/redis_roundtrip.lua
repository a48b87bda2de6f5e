--[[ redis_roundtrip: one trivial task through Redis, submit to result.

A private redis-server (Unix socket) and 2 local `weft worker` processes,
each --workers 1, set up as in redis_map.lua (see redislib.lua). Then
2,000 sequential ex:submit(function() return 1 end):result(5) on
weft.redis{url = ..., queue = ...}, each timed alone, after 200 untimed
ones. Prints the median in ms; p99 and the slowest are in the note and
the other fields.

WEFT_BENCH_REDIS_THREADS and WEFT_BENCH_REDIS_PREFETCH choose the workers'
mode and --prefetch as in redis_map.lua (the same defaults).

"Baseline": redis_roundtrip.py, redis-benchmark's PING latency on the same
kind of server: one Redis round trip, the floor (a task takes several).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local redis = dofile((arg[0]:match("^(.*)/") or ".") .. "/redislib.lua")
local weft = require "weft"

local CALLS = 2000
local WARM = 200
local RESULT_TIMEOUT = 5

local threads = redis.setting("WEFT_BENCH_REDIS_THREADS", 1) == 1
local prefetch = redis.setting("WEFT_BENCH_REDIS_PREFETCH", nil)   -- nil: the worker's own

local function one()
  return 1
end

redis.with_workers({ workers = 2, threads = threads, prefetch = prefetch }, function(url, setup)
  local ex = weft.redis{url = url, queue = redis.QUEUE, secret = redis.SECRET}
  local ok, err = pcall(function()
    for _ = 1, WARM do
      assert(ex:submit(one):result(RESULT_TIMEOUT) == 1, "wrong result")
    end
    setup.check()
    collectgarbage("collect")
    local times = {}
    for i = 1, CALLS do
      local t0 = bench.now()
      local v = ex:submit(one):result(RESULT_TIMEOUT)
      times[i] = bench.now() - t0
      assert(v == 1, "call " .. i .. ": wrong result " .. tostring(v))
      if i % 500 == 0 then setup.check() end
    end
    local p99 = bench.percentile(times, 99) * 1e3
    bench.result("p50_ms", bench.percentile(times, 50) * 1e3,
                 "p99_ms", p99, "max_ms", bench.percentile(times, 100) * 1e3,
                 "min_ms", math.min(table.unpack(times)) * 1e3, "calls", CALLS,
                 "note", ("p99 %.2f ms; %s"):format(p99, setup.describe))
  end)
  ex:shutdown()
  if not ok then error(err, 0) end
end)
