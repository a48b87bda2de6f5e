--[[ lateness_signal: how long after its deadline weft.timeout.signal has
interrupted a pure-Lua loop in the main thread and raised.

Target: p99 under 5 ms over 200 trials. Each trial calls
weft.timeout.signal(0.02, spin) (spin: `while true do end`, pure Lua; the
deadline arrives as SIGALRM and a hook stops the loop) and measures, with
core.now(), how long after t0 + 0.02 the call raised its "timeout" error.
The loop runs in this thread, so once the call has raised it has stopped.
Baseline: lateness_signal.py (setitimer and a handler that raises).
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
  local ok, err = pcall(weft.timeout.signal, T, spin)
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
