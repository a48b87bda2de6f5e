--[[ proc_respawn: from SIGKILL of a busy worker to its replacement serving
a task.

weft.processes{workers = 1}. Each trial asks the worker for its pid (a task
reading /proc/self/stat), submits a task that spins forever, and waits
until it is running and has used CPU time (the worker's utime + stime in
/proc/<pid>/stat has grown by 2 clock ticks). Then, timed with core.now():
SIGKILL the worker, submit a trivial task that returns its worker's pid,
and wait for that result. The kill is luv.kill, a plain kill(2) as
Python's os.kill; without luv it falls back to os.execute("kill -KILL ..."),
which adds a shell (~1-2 ms: the median cost of os.execute("true") is
subtracted, the raw figure is in raw_p50_ms). After the timed part it checks that the new pid differs and
that the spinning task's future failed with kind "worker_died". Prints p50
(the figure) and max over 20 trials after a warm-up. Baseline:
proc_respawn.py (ProcessPoolExecutor(1): the pool is broken for good, so
it has to be recreated).
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local weft = require "weft"
local core = require "weft.core"

local TRIALS = 20

local has_luv, luv = pcall(require, "luv")

local function worker_pid()
  return io.open("/proc/self/stat"):read("n")
end

local function spin()
  while true do end
end

-- utime + stime of a process, in clock ticks.
local function cpu_ticks(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat", "r"))
  local line = f:read("l")
  f:close()
  -- after "pid (comm) ": state is field 3, utime 14, stime 15
  local fields = {}
  for word in line:match("^.*%)%s+(.*)$"):gmatch("%S+") do
    fields[#fields + 1] = word
  end
  return tonumber(fields[12]) + tonumber(fields[13])
end

local kill, kill_cost = nil, 0
if has_luv then
  kill = function(pid) assert(luv.kill(pid, 9)) end
else
  kill = function(pid) assert(os.execute("kill -KILL " .. pid)) end
  local costs = {}
  for i = 1, 20 do
    local t0 = core.now()
    os.execute("true")
    costs[i] = core.now() - t0
  end
  kill_cost = bench.percentile(costs, 50)
end

local function wait_spinning(busy, pid)
  local deadline = core.now() + 5
  while not busy:running() do
    assert(core.now() < deadline, "the spinning task did not start")
    weft.sleep(0.001)
  end
  local ticks = cpu_ticks(pid)
  while cpu_ticks(pid) < ticks + 2 do
    assert(core.now() < deadline, "the spinning task does not spin")
    weft.sleep(0.001)
  end
end

-- One trial: returns the seconds from the kill to the next task's result.
local function trial(ex)
  local pid = ex:submit(worker_pid):result()
  local busy = ex:submit(spin)
  wait_spinning(busy, pid)
  local t0 = core.now()
  kill(pid)
  local new_pid = ex:submit(worker_pid):result()
  local elapsed = core.now() - t0
  assert(new_pid ~= pid, "the task ran on the killed worker's pid " .. pid)
  local ok, err = pcall(busy.result, busy, 5)
  assert(not ok and weft.is(err, "worker_died"),
         "the spinning task did not fail with worker_died: " .. tostring(ok and "it returned" or err))
  return elapsed
end

do
  local ex <close> = weft.processes{workers = 1}
  trial(ex) -- warm-up
  local times = {}
  for i = 1, TRIALS do
    times[i] = trial(ex)
  end
  local stats = ex:stats()
  local p50 = bench.percentile(times, 50)
  local fields = {
    "p50_ms", (p50 - kill_cost) * 1e3,
    "max_ms", (bench.percentile(times, 100) - kill_cost) * 1e3,
    "restarts", stats.restarts or -1,
    "trials", TRIALS,
  }
  if not has_luv then
    table.move({"raw_p50_ms", p50 * 1e3, "kill_cost_ms", kill_cost * 1e3,
                "note", "kill by a shell, its cost subtracted"}, 1, 6, #fields + 1, fields)
  end
  bench.result(table.unpack(fields))
end
