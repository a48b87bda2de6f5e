--[[ future_memory: what one pending future costs.

1,000,000 pending weft.future() objects kept in a table; prints the growth
of the process's RSS (/proc/self/statm, after a full collection before and
after) divided by the count. The table's array is allocated before the first
measurement, so only the futures (userdata + C object) are counted.
Baseline: future_memory.py (concurrent.futures.Future).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"

local N = 1000000

local futs = {}
for i = 1, N do
  futs[i] = false
end
weft.future() -- load everything the first future needs before measuring

collectgarbage("collect")
collectgarbage("collect")
local before = bench.rss_bytes()
for i = 1, N do
  futs[i] = weft.future()
end
collectgarbage("collect")
collectgarbage("collect")
local after = bench.rss_bytes()

assert(futs[N]:state() == "pending", "a fresh future is not pending")
bench.result("bytes_per_future", (after - before) / N, "futures", N)
