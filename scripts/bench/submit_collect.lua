--[[ submit_collect: the per-task overhead of a thread pool.

20,000 trivial tasks on weft.threads{workers = 2}, each a NEW closure with
an upvalue (so every submit encodes fresh bytecode + upvalues), all submitted
first, then every result collected. Prints microseconds per task, best of 5
runs after a warm-up. Baseline: submit_collect.py (ThreadPoolExecutor).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"

local N = 20000
local RUNS = 5

local function once(ex)
  local t0 = bench.now()
  local futs = {}
  for i = 1, N do
    local x = i
    futs[i] = ex:submit(function() return x + 1 end)
  end
  local sum = 0
  for i = 1, N do
    sum = sum + futs[i]:result()
  end
  local elapsed = bench.now() - t0
  assert(sum == N * (N + 1) // 2 + N, "wrong sum " .. tostring(sum))
  return elapsed
end

do
  local ex <close> = weft.threads{workers = 2}
  once(ex) -- warm-up: starts the workers, sizes the queues
  local best = bench.best_of(RUNS, function() return once(ex) end)
  bench.result("us_per_task", best / N * 1e6, "tasks", N, "runs", RUNS)
end
