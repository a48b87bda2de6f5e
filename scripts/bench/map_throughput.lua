--[[ map_throughput: how fast ex:map streams a long list.

ex:map(function(x) return x * 2 end, {1 .. 1,000,000}) on
weft.threads{workers = 2}, every result read with a for loop and summed
(and the sum checked). Prints items per second, best of 3 runs after a
warm-up. Baseline: map_throughput.py (ThreadPoolExecutor.map, on 100,000
items because Python is slow).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"

local N = 1000000
local CHUNKSIZE = 1000
local RUNS = 3

local items = {}
for i = 1, N do
  items[i] = i
end

local function once(ex, list, n)
  local t0 = bench.now()
  local sum, count = 0, 0
  for i, v in ex:map(function(x) return x * 2 end, list, {chunksize = CHUNKSIZE}) do
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
  local ex <close> = weft.threads{workers = 2}
  local warm = {}
  for i = 1, 100000 do
    warm[i] = i
  end
  once(ex, warm, #warm)
  local best = bench.best_of(RUNS, function() return once(ex, items, N) end)
  bench.result("items_per_s", N / best, "items", N, "chunksize", CHUNKSIZE, "runs", RUNS)
end
