--[[ Shared helpers for the weft benchmarks in scripts/bench/.

A benchmark prints its figure as one machine-readable line, which
scripts/bench/run parses:

    RESULT us_per_task=1.83 tasks=20000 runs=5

The first key is the figure being compared; the rest are notes. Values are
numbers, except an optional note="..." (a string without double quotes),
which the table shows beside the figure: a caveat the number alone hides.
Python baselines print the same line (scripts/bench/benchlib.py).

Load it from a benchmark with
    local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
so the scripts run from any directory with the plain weft LUA_PATH.
]]

local M = {}

local PAGE_SIZE = 4096 -- /proc/self/statm counts pages

-- Stock Lua has no sub-second wall clock (os.clock is CPU time summed over
-- every thread of the process, which is useless with a thread pool). luv is
-- a weft dependency (lua-luv, installed by scripts/bootstrap) and has a
-- monotonic nanosecond clock; without it, fall back to date(1), coarse but
-- good enough for runs that last a second.
local has_luv, luv = pcall(require, "luv")

--- Wall-clock seconds from a monotonic clock.
function M.now()
  if has_luv then
    return luv.hrtime() / 1e9
  end
  local pipe = assert(io.popen("date +%s.%N"))
  local t = tonumber(pipe:read("l"))
  pipe:close()
  return t
end

--- Calls fn() `runs` times (collecting garbage before each) and returns the
--- smallest value it returned: the run least disturbed by the machine.
function M.best_of(runs, fn)
  local best
  for _ = 1, runs do
    collectgarbage("collect")
    local t = fn()
    if best == nil or t < best then
      best = t
    end
  end
  return best
end

--- The p-th percentile (0 < p <= 100) of a list of numbers, by nearest
--- rank: the smallest sample that at least p % of the samples do not exceed.
function M.percentile(samples, p)
  local sorted = table.move(samples, 1, #samples, 1, {})
  table.sort(sorted)
  return sorted[math.max(1, math.ceil(#sorted * p / 100))]
end

--- Resident set size of this process, in bytes.
function M.rss_bytes()
  local f = assert(io.open("/proc/self/statm", "r"))
  local line = f:read("l")
  f:close()
  local resident = assert(tonumber(line:match("^%d+%s+(%d+)")), "cannot parse /proc/self/statm")
  return resident * PAGE_SIZE
end

local function format_value(v)
  if type(v) == "string" then
    assert(not v:find('"'), "a RESULT string cannot hold a double quote")
    return '"' .. v .. '"'
  end
  if math.type(v) == "float" then
    if math.abs(v) >= 1000 then
      return string.format("%.0f", v)
    end
    return string.format("%.4g", v)
  end
  return tostring(v)
end

--- Prints the RESULT line from key, value pairs, in the order given; the
--- first pair is the figure: bench.result("us_per_task", 1.83, "runs", 5).
function M.result(...)
  local n = select("#", ...)
  assert(n >= 2 and n % 2 == 0, "bench.result wants key, value pairs")
  local parts = {}
  for i = 1, n, 2 do
    local key, value = select(i, ...)
    parts[#parts + 1] = key .. "=" .. format_value(value)
  end
  io.write("RESULT ", table.concat(parts, " "), "\n")
  io.flush()
end

return M
