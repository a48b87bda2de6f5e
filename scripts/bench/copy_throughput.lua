--[[ copy_throughput: how fast values cross between states.

Encodes and decodes (the round trip every task argument and result makes
to a process or another machine) a list of 100,000 records shaped like
typical task data: an integer id, a string, a float, a nested list of
strings and a nested table with string keys, plus one array of 100,000
integers. Prints records per second, best of 5 runs after a warm-up.
Baseline: copy_throughput.py (pickle.dumps then pickle.loads, what
ProcessPoolExecutor does to every argument and result).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local core = require "weft.core"

local N = 100000
local RUNS = 5

local records, ints = {}, {}
for i = 1, N do
  records[i] = { id = i, name = "item-" .. i, score = i * 0.5,
                 tags = { "red", "green", "blue" }, where = { x = i, y = -i } }
  ints[i] = i * 7
end
local value = { records = records, ints = ints }

local function once()
  local t0 = bench.now()
  local bytes = core._wire_encode(value)
  local back = core._wire_decode(bytes)
  local elapsed = bench.now() - t0
  assert(back.records[N].name == "item-" .. N and back.ints[N] == N * 7)
  return elapsed, #bytes
end

once()
local size
local best = bench.best_of(RUNS, function()
  local t, n = once()
  size = n
  return t
end)
bench.result("records_per_s", N / best, "mb_per_s", size / best / 1e6,
             "bytes", size, "runs", RUNS)
