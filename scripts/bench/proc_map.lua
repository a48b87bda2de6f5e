--[[ proc_map: how fast ex:map streams a long list through a process pool.

ex:map(double, {1 .. 1,000,000}, {chunksize = 1000}) on
weft.processes{workers = 2}, every result read with a for loop and summed
(and the order and the sum checked). chunksize = 1000 is the one
proc_map.py passes to Python. Prints items per second, best of 3 runs
after a warm-up on 100,000 items; default_items_per_s is one run on
100,000 items with the chunksize weft picks. Baseline: proc_map.py
(ProcessPoolExecutor(2).map, chunksize=1000).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"

local N = 1000000
local N_DEFAULT = 100000 -- items for the run with weft's own chunksize
local CHUNKSIZE = 1000
local RUNS = 3

local function double(x)
  return x * 2
end

local function list(n)
  local items = {}
  for i = 1, n do
    items[i] = i
  end
  return items
end

-- opts: the map options (nil: weft's defaults).
local function once(ex, items, opts)
  local n = #items
  local t0 = bench.now()
  local sum, count = 0, 0
  for i, v in ex:map(double, items, opts) do
    count = count + 1
    assert(i == count, "map yielded out of order")
    sum = sum + v
  end
  local elapsed = bench.now() - t0
  assert(count == n, "map yielded " .. count .. " of " .. n .. " items")
  assert(sum == n * (n + 1), "wrong sum " .. tostring(sum))
  return elapsed
end

do
  local ex <close> = weft.processes{workers = 2}
  local items, small = list(N), list(N_DEFAULT)
  local opts = {chunksize = CHUNKSIZE}
  once(ex, small, opts) -- warm-up: starts the workers
  local best = bench.best_of(RUNS, function() return once(ex, items, opts) end)
  collectgarbage("collect")
  local default = once(ex, small, nil)
  bench.result("items_per_s", N / best, "items", N, "chunksize", CHUNKSIZE, "runs", RUNS,
               "default_items_per_s", N_DEFAULT / default,
               "note", "chunksize=1000")
end
