--[[ proc_startup: from creating a process pool to its first result.

Each trial times, with core.now(), weft.processes{workers = 2}, one
trivial task submitted, and its result; the pool is shut down (waiting
for its workers to exit) after the timed part. Prints the median over 20
trials after a warm-up, with the fastest and slowest. Baseline:
proc_startup.py (ProcessPoolExecutor(2) with the fork start method, the
figure, and with spawn, in a note).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"
local core = require "weft.core"

local TRIALS = 20
local WORKERS = 2

local function inc(x)
  return x + 1
end

-- One trial: returns the seconds from creating the pool to its first result.
local function trial()
  local t0 = core.now()
  local ex = weft.processes{workers = WORKERS}
  local value = ex:submit(inc, 1):result()
  local elapsed = core.now() - t0
  ex:shutdown()
  assert(value == 2, "wrong result " .. tostring(value))
  return elapsed
end

trial() -- warm-up: page cache, the worker executable
local times = {}
for i = 1, TRIALS do
  collectgarbage("collect")
  times[i] = trial()
end
bench.result("p50_ms", bench.percentile(times, 50) * 1e3,
             "min_ms", math.min(table.unpack(times)) * 1e3,
             "max_ms", bench.percentile(times, 100) * 1e3,
             "trials", TRIALS, "workers", WORKERS)
