--[[ lateness_process: how long after its deadline weft.timeout.process
has killed and reaped its child and raised.

Target: p99 under 5 ms over 200 trials. Each trial calls
weft.timeout.process(0.02, spin) (spin: `while true do end`, pure Lua, run
in a fresh child process) and measures, with core.now(), how long after
t0 + 0.02 the call raised its "timeout" error; by then the child has been
killed with SIGKILL and reaped, so the task has stopped. t0 is taken before
the call, so the child's start counts against the 20 ms, as it would for a
caller. Baseline: lateness_process.py (multiprocessing: join(T), kill, join).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"
local core = require "weft.core"

local TRIALS = 200
local T = 0.02 -- the timeout, seconds

local function spin()
  while true do end
end

-- One trial: returns the lateness, in seconds.
local function trial()
  local t0 = core.now()
  local ok, err = pcall(weft.timeout.process, T, spin)
  local late = core.now() - (t0 + T)
  assert(not ok and core.is(err, "timeout"), "the call did not time out: " .. tostring(err))
  return late
end

trial() -- warm-up
local lates = {}
for i = 1, TRIALS do
  lates[i] = trial()
end
bench.result("p99_ms", bench.percentile(lates, 99) * 1e3,
             "p50_ms", bench.percentile(lates, 50) * 1e3,
             "max_ms", bench.percentile(lates, 100) * 1e3,
             "trials", TRIALS, "timeout_ms", T * 1e3)
