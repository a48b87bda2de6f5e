--[[ memory_burst: does a burst of tasks leave the process fat?

Target: after the burst and shutdown, RSS at most 1.5 times what it was
before the burst. The script loads weft and runs a warm-up pool (so the
libraries, the deadline service and a first arena are in), measures RSS
(`pre`), then runs 100,000 tasks on weft.threads{} (one worker per CPU):
all submitted, every result collected (each a small table, so the results
are heap blocks in the workers' arenas); `peak` is measured with every
future still held. Then the executor is shut down, futures and executor
are dropped, two full collections run, and after 0.2 s (weft gives memory
back at most every 50 ms, from the deadline service) RSS is measured again
(`after`). The figure is after / pre. Baseline: memory_burst.py, the same
with ThreadPoolExecutor.
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"

local N = 100000

local function settled_rss()
  collectgarbage("collect")
  collectgarbage("collect")
  weft.sleep(0.2)
  collectgarbage("collect")
  return bench.rss_bytes()
end

local function task(x)
  return { x, tostring(x) }
end

do -- warm-up
  local ex <close> = weft.threads{}
  ex:submit(task, 1):result()
end
local pre = settled_rss()

local peak
local function burst()
  local ex <close> = weft.threads{}
  local futs = {}
  for i = 1, N do
    futs[i] = ex:submit(task, i)
  end
  for i = 1, N do
    assert(futs[i]:result()[1] == i, "a wrong result")
  end
  collectgarbage("collect")
  peak = bench.rss_bytes()
end
burst()
local after = settled_rss()

bench.result("after_per_pre", after / pre,
             "pre_mb", pre / 1e6, "peak_mb", peak / 1e6, "after_mb", after / 1e6,
             "tasks", N)
