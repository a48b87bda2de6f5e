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

both from core.now() (CLOCK_MONOTONIC, the same clock in the workers).
The deadline is the task's own: when it started (f:info().started) plus
its timeout, as weft counts it. With more workers than cores a task may
start a few ms after it was submitted (the threads share the cores); that
delay is not lateness past a deadline, and is reported on its own
(start_p99_ms: submit to start). The
stopped lateness is an upper bound (it includes queueing the next task);
its p99 is the figure. A worker that fails to stop is replaced by a new
thread after a grace period, and its next task would then start on the
new thread, so the script also checks that the process has not gained a
thread. Baseline: lateness_thread.py (ThreadPoolExecutor cannot stop its
task at all, only stop waiting for it).

With a number of workers W as argument (lateness_thread_4.lua passes 4:
more workers than the 2 cores of the reference machine), each trial runs W
spins at once on a W-worker pool, the i-th with timeout T + (i - 1) * 3 ms,
so that each deadline passes while the later spins still hold the cores.
As soon as the i-th has failed, a trivial task is submitted: the first
worker free to start it is the one just stopped (the others still spin),
so its start tells when that spin had stopped. 200 trials make 200 * W
samples.
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"
local core = require "weft.core"

local TRIALS = 200
local T = 0.02 -- the task's timeout, seconds
local W = math.tointeger(tonumber(arg[1] or "1")) or error("usage: lateness_thread.lua [WORKERS]")
local STAGGER = 0.003 -- seconds between the deadlines of one trial's spins

local function spin()
  while true do end
end

local function start_time()
  return require("weft.core").now()
end

-- The pool's worker threads (named weft:pool:N), not counting the
-- short-lived thread that trims the heap now and then (weft:trim).
local function thread_count()
  local n = 0
  local stat = assert(io.open("/proc/self/stat", "r"))
  local pid = stat:read("n")
  stat:close()
  local p = assert(io.popen("cat /proc/" .. pid .. "/task/*/comm 2>/dev/null"))
  for name in p:lines() do
    if name:match("^weft:pool:") then n = n + 1 end
  end
  p:close()
  return n
end

local starts = {}   -- submit to start, seconds

-- One trial: adds its failed and stopped latenesses (seconds) to the lists.
local function trial(ex, failed, stopped)
  local futs, deadlines, failed_at, nexts, submitted = {}, {}, {}, {}, {}
  for i = 1, W do
    submitted[i] = core.now()
    futs[i] = ex:submit(weft.task{spin, timeout = T + (i - 1) * STAGGER})
  end
  for i = 1, W do
    local ok, err = pcall(futs[i].result, futs[i])
    failed_at[i] = core.now()
    assert(not ok and core.is(err, "timeout"), "the task did not time out: " .. tostring(err))
    nexts[i] = ex:submit(start_time)
  end
  for i = 1, W do
    local started = assert(futs[i]:info().started, "a timed-out task has no start time")
    deadlines[i] = started + T + (i - 1) * STAGGER
    starts[#starts + 1] = started - submitted[i]
    local late = failed_at[i] - deadlines[i]
    failed[#failed + 1] = late
    stopped[#stopped + 1] = math.max(late, nexts[i]:result() - deadlines[i])
  end
end

do
  local ex <close> = weft.threads{workers = W}
  trial(ex, {}, {}) -- warm-up: starts the workers and the deadline service
  local threads = thread_count()
  local failed, stopped = {}, {}
  for _ = 1, TRIALS do
    trial(ex, failed, stopped)
  end
  assert(thread_count() == threads, "a worker was replaced: a task was not stopped")
  bench.result("p99_ms", bench.percentile(stopped, 99) * 1e3,
               "p50_ms", bench.percentile(stopped, 50) * 1e3,
               "max_ms", bench.percentile(stopped, 100) * 1e3,
               "failed_p50_ms", bench.percentile(failed, 50) * 1e3,
               "failed_p99_ms", bench.percentile(failed, 99) * 1e3,
               "start_p50_ms", bench.percentile(starts, 50) * 1e3,
               "start_p99_ms", bench.percentile(starts, 99) * 1e3,
               "stopped", #stopped, "trials", TRIALS, "workers", W, "timeout_ms", T * 1e3)
end
