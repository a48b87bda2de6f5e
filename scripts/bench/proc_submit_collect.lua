--[[ proc_submit_collect: the per-task overhead of a process pool.

20,000 trivial tasks (inc(i), one local function, its argument i) on
weft.processes{workers = 2}, all submitted first, then every result
collected and summed (and the sum checked); each task's argument goes to a
worker process and its result comes back. Prints microseconds per task,
best of 5 runs after a warm-up. Baseline: proc_submit_collect.py
(ProcessPoolExecutor(2), fork).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"

local N = 20000
local RUNS = 5

local function inc(x)
  return x + 1
end

local function once(ex, n)
  local t0 = bench.now()
  local futs = {}
  for i = 1, n do
    futs[i] = ex:submit(inc, i)
  end
  local sum = 0
  for i = 1, n do
    sum = sum + futs[i]:result()
  end
  local elapsed = bench.now() - t0
  assert(sum == n * (n + 1) // 2 + n, "wrong sum " .. tostring(sum))
  return elapsed
end

do
  local ex <close> = weft.processes{workers = 2}
  once(ex, 1000) -- warm-up: starts the workers
  local best = bench.best_of(RUNS, function() return once(ex, N) end)
  bench.result("us_per_task", best / N * 1e6, "tasks", N, "runs", RUNS)
end
