--[[ cpu_scaling: do two worker threads run Lua twice as fast as one?

CPU-bound pure-Lua work (8 tasks of 10,000,000 loop turns, a few float
operations each; ~0.8 s in all on one core) on weft.threads{workers = 1},
then {workers = 2}. Prints speedup = time(1 worker) / time(2 workers), each
time the best of 3 runs after the workers have started. The machine has
2 cores, so 2.0 is the ceiling. Baseline: cpu_scaling.py (the GIL holds
Python near 1).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"

local TASKS = 8
local ITERS = 10000000 -- per task
local RUNS = 3

-- No upvalues, no globals: the function travels to the workers as bytecode.
local function spin(n)
  local x = 0.0
  for i = 1, n do
    x = x + (i % 7) * 0.5 - x * 1e-9
  end
  return x
end

local function time_with(workers, expected)
  local ex <close> = weft.threads{workers = workers}
  local warm = {}
  for i = 1, workers do
    warm[i] = ex:submit(spin, 1000)
  end
  weft.wait(warm)
  return bench.best_of(RUNS, function()
    local t0 = bench.now()
    local futs = {}
    for i = 1, TASKS do
      futs[i] = ex:submit(spin, ITERS)
    end
    weft.wait(futs)
    local elapsed = bench.now() - t0
    for i = 1, TASKS do
      assert(futs[i]:result() == expected, "task " .. i .. " computed a wrong value")
    end
    return elapsed
  end)
end

local expected = spin(ITERS)
local t1 = time_with(1, expected)
local t2 = time_with(2, expected)
bench.result("speedup", t1 / t2, "t1_s", t1, "t2_s", t2, "tasks", TASKS, "iters", ITERS)
