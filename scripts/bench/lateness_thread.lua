--[[ lateness_thread: how long after its deadline a timed-out thread task
has failed AND stopped.

Target: p99 under 5 ms over 200 trials. Each trial submits
weft.task{spin, timeout = 0.02} (spin: `while true do end`, pure Lua) to a
1-worker pool and waits for the future to fail with kind "timeout". To show
the task has stopped, it then submits a trivial task to the same pool that
returns its start time: with one worker, it can only start once the spin
has been interrupted and the worker has rebuilt its Lua state.

    failed lateness  = (when result() raised) - deadline
    stopped lateness = max(failed, start of the next task) - deadline

both from core.now() (CLOCK_MONOTONIC, the same clock in the workers). The
stopped lateness is an upper bound (it includes queueing the next task);
its p99 is the figure. A worker that fails to stop is replaced by a new
thread after a grace period, and its next task would then start on the
new thread, so the script also checks that the process has not gained a
thread. Baseline: lateness_thread.py (ThreadPoolExecutor cannot stop its
task at all, only stop waiting for it).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"
local core = require "weft.core"

local TRIALS = 200
local T = 0.02 -- the task's timeout, seconds

local function spin()
  while true do end
end

local function start_time()
  return require("weft.core").now()
end

local function thread_count()
  local f = assert(io.open("/proc/self/status", "r"))
  local text = f:read("a")
  f:close()
  return assert(tonumber(text:match("\nThreads:%s*(%d+)")), "cannot parse /proc/self/status")
end

-- One trial: returns the failed and the stopped lateness, in seconds.
local function trial(ex)
  local t0 = core.now()
  local f = ex:submit(weft.task{spin, timeout = T})
  local ok, err = pcall(f.result, f)
  local failed_at = core.now()
  assert(not ok and core.is(err, "timeout"), "the task did not time out: " .. tostring(err))
  local next_start = ex:submit(start_time):result()
  local deadline = t0 + T
  return failed_at - deadline, math.max(failed_at, next_start) - deadline
end

do
  local ex <close> = weft.threads{workers = 1}
  trial(ex) -- warm-up: starts the worker and the deadline service
  local threads = thread_count()
  local failed, stopped = {}, {}
  for i = 1, TRIALS do
    failed[i], stopped[i] = trial(ex)
  end
  assert(thread_count() == threads, "a worker was replaced: a task was not stopped")
  bench.result("p99_ms", bench.percentile(stopped, 99) * 1e3,
               "p50_ms", bench.percentile(stopped, 50) * 1e3,
               "max_ms", bench.percentile(stopped, 100) * 1e3,
               "failed_p50_ms", bench.percentile(failed, 50) * 1e3,
               "failed_p99_ms", bench.percentile(failed, 99) * 1e3,
               "stopped", TRIALS, "trials", TRIALS, "timeout_ms", T * 1e3)
end
