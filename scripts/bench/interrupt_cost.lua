--[[ interrupt_cost: what being interruptible costs a CPU-bound pure-Lua loop.

Target: under 3 % compared with no weft at all. The same function (about
20,000,000 loop turns of integer and float arithmetic and a small table
read; ~0.3 s on one core) is timed, each time from inside the run, with
CLOCK_MONOTONIC:

  plain    in a child `lua5.4 interrupt_cost.lua --plain N`, which never
           loads weft (timed with luv's hrtime, also CLOCK_MONOTONIC)
  task     as weft.task{fn, timeout = 60} on a 1-worker pool: the deadline
           is armed but does not fire
  signal   under weft.timeout.signal(60, fn) in the main thread
  no_timeout  (a note, not judged) as a plain task on the same pool, to
           tell the cost of the worker thread from that of the deadline

The machine is a noisy 2-core VM, so the modes take turns, RUNS rounds of
one run each, and each mode keeps its best (smallest) time; every run's
result is checked against the main thread's. Prints
overhead_pct = (max(best task, best signal) / best plain - 1) * 100; below
zero is noise. No Python baseline: Python cannot stop a running thread,
so nothing there matches the task mode, and the target is against weft's
own absence, which this script measures itself.
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")

local N = 20000000 -- loop turns per run
local RUNS = 7

-- The measured code: no globals, no calls inside the loop.
local function work(n)
  local t = { 3, 1, 4, 1, 5, 9, 2, 6 }
  local acc, x = 0, 0.0
  for i = 1, n do
    acc = (acc + t[(i & 7) + 1] * i) % 1000003
    x = x * 0.999 + acc * 0.5
  end
  return acc + x
end

if arg[1] == "--plain" then
  -- The child run by the main part below: no weft at all.
  local n = assert(math.tointeger(arg[2]), "usage: interrupt_cost.lua --plain N")
  local t0 = bench.now()
  local r = work(n)
  print(string.format("%.9f %.17g", bench.now() - t0, r))
  os.exit(0)
end

local weft = require "weft"

-- work(n) timed inside wherever it runs: a worker or the main thread.
local function timed_work(n)
  local now = require("weft.core").now
  local t0 = now()
  local r = work(n)
  return now() - t0, r
end

local plain_command = string.format("%s '%s' --plain",
  arg[-1] or "lua5.4", (arg[0]:gsub("'", "'\\''")))

local function plain(_, n)
  local pipe = assert(io.popen(plain_command .. " " .. n))
  local line = pipe:read("a")
  assert(pipe:close(), "the --plain run failed")
  local seconds, r = line:match("^(%S+) (%S+)")
  return assert(tonumber(seconds), "bad --plain output: " .. line), tonumber(r)
end

local runs = {
  plain = plain,
  task = function(ex, n)
    return ex:submit(weft.task{timed_work, timeout = 60}, n):result()
  end,
  signal = function(_, n)
    return weft.timeout.signal(60, timed_work, n)
  end,
  no_timeout = function(ex, n)
    return ex:submit(timed_work, n):result()
  end,
}
local ORDER = { "plain", "task", "signal", "no_timeout" }

do
  local ex <close> = weft.threads{workers = 1}
  local expected = work(N)
  local best = {}
  for _ = 1, RUNS do
    for _, mode in ipairs(ORDER) do
      collectgarbage("collect")
      local seconds, r = runs[mode](ex, N)
      assert(r == expected, mode .. " computed a wrong value")
      if best[mode] == nil or seconds < best[mode] then
        best[mode] = seconds
      end
    end
  end

  local function pct(mode)
    return (best[mode] / best.plain - 1) * 100
  end
  bench.result("overhead_pct", math.max(pct("task"), pct("signal")),
               "task_pct", pct("task"), "signal_pct", pct("signal"),
               "no_timeout_pct", pct("no_timeout"),
               "plain_s", best.plain, "runs", RUNS, "iters", N)
end
