-- spec/stress/chaos.lua -- the process pool under chaos: tasks that start
-- programs (background and foreground `sleep`s), time out, call os.exit(n),
-- get cancelled with force or have their worker killed, while random
-- workers are SIGKILLed under load and workers are recycled.  Afterwards:
-- every future ended the way its task earned (and has info().started if
-- its task ran), none was lost, and no
-- process is left (no child of ours, and none of the tagged sleeps the
-- tasks started, wherever they were reparented).
--
--   lua5.4 spec/stress/chaos.lua [--tasks N] [--seed S] [--batch B] [--workers W]
--
-- Defaults: 20,000 tasks, 4 workers, batches of 250, a seed from the clock
-- (printed, with the line that reruns it).  scripts/check/stress runs a
-- shortened form with a fixed seed; `make stress` the full one.
-- LUA_PATH/LUA_CPATH must find weft (scripts/check/stress sets them).
--
-- Each task's fate is drawn from the seed before it is submitted:
--   ok           works 0-2 ms, returns 2 * i           -> finished, 2 * i
--   fail         works 0-2 ms, error({code = i})       -> failed, kind task
--   spawn        starts `sleep &`, returns 2 * i        -> finished, 2 * i
--   cancel       f:cancel() right after submit         -> cancelled, or 2 * i
--   timeout      loops past its 50 ms timeout          -> failed, kind timeout
--   bg_timeout   starts `sleep &`, then loops past it   -> failed, kind timeout
--   fg_timeout   waits in os.execute("sleep") past it  -> failed, kind timeout
--   exit         os.exit(n), n in 0..5                 -> worker_died, "status n"
--   bg_exit      starts `sleep &`, then os.exit(n)      -> worker_died, "status n"
--   force        loops; cancel{force=true} once running -> cancelled
--   bg_force     starts `sleep &`, loops; the same      -> cancelled
--   kill         loops; SIGKILL of its worker once running -> worker_died, SIGKILL
--   bg_kill      starts `sleep &`, loops; the same      -> worker_died, SIGKILL
-- Besides, after some submits a random worker is SIGKILLed (one known to
-- be ready: it ran a task already).  Such a kill fails at most the one task
-- that worker ran, with kind worker_died naming SIGKILL, whatever its fate:
-- those are counted as collateral, and must be no more than the random kills.
--
-- Every sleep a task starts is `sleep 900.<tag>` (tag: this process's pid),
-- so that orphans can be found in /proc by their command line.
--
-- It ends with "N passed, N failed"; each line before that is one check.
local weft = require "weft"
local core = require "weft.core"

-- === options ===============================================================

local S = dofile((arg[0]:match("^(.*)/") or ".") .. "/stresslib.lua")
local opts = S.options({ tasks = 20000, seed = os.time() % 100000, batch = 250, workers = 4 },
                       "chaos.lua")

io.stdout:setvbuf("line")
print(("chaos: %d process tasks, %d workers, batches of %d, seed %d")
      :format(opts.tasks, opts.workers, opts.batch, opts.seed))
print(("chaos: rerun with: lua5.4 spec/stress/chaos.lua --tasks %d --seed %d --batch %d --workers %d")
      :format(opts.tasks, opts.seed, opts.batch, opts.workers))

-- === the machine's view ====================================================

local read_file, list_dir, mypid = S.read_file, S.list_dir, S.mypid
local children_now, kill_pid = S.children_now, S.kill_pid

local SLEEP = ("sleep 900.%d"):format(mypid)          -- what the tasks start
local SLEEP_CMDLINE = "sleep\0" .. ("900.%d"):format(mypid) .. "\0"

-- The tasks' sleeps still running anywhere (zombies are dead: whoever
-- adopted them reaps them).
local function tagged_sleeps()
  local found = {}
  for _, pid in ipairs(list_dir("/proc")) do
    if pid:match("^%d+$") and read_file("/proc/" .. pid .. "/cmdline") == SLEEP_CMDLINE then
      local state = (read_file("/proc/" .. pid .. "/stat") or ""):match(".*%) (%a)")
      if state and state ~= "Z" then found[#found + 1] = pid end
    end
  end
  return found
end

-- === checks ================================================================

local check, summary = S.checks()

-- === the tasks =============================================================

local TIMEOUT = 0.05

-- ok and fail tasks work for up to `ms` milliseconds first, so that the
-- workers are busy when a random kill comes.
local function work(ms)
  local c = require "weft.core"
  local stop = c.now() + ms / 1000
  while c.now() < stop do end
end
local function ok_fn(i, ms) work(ms); return 2 * i end
local function fail_fn(i, ms) work(ms); error({ code = i }) end
local function spawn_fn(i, sleep)
  os.execute(sleep .. " &")
  return 2 * i
end
local function loop_fn(sleep)
  if sleep then os.execute(sleep .. " &") end
  while true do end
end
local function fg_fn(sleep) os.execute(sleep) end
local function exit_fn(n, sleep)
  if sleep then os.execute(sleep .. " &") end
  os.exit(n)
end
local timeout_task = weft.task { loop_fn, name = "chaos-timeout", timeout = TIMEOUT }
local fg_task = weft.task { fg_fn, name = "chaos-fg", timeout = TIMEOUT }
local kill_task = weft.task { loop_fn, name = "chaos-kill" }

-- Fates and their weights per ten thousand tasks; the rest are ok.
local FATES = {
  { "fail", 300 }, { "spawn", 300 }, { "cancel", 100 },
  { "timeout", 40 }, { "bg_timeout", 40 }, { "fg_timeout", 40 },
  { "exit", 30 }, { "bg_exit", 30 },
  { "force", 30 }, { "bg_force", 30 },
  { "kill", 30 }, { "bg_kill", 30 },
}
local RANDOM_KILLS = 50   -- per ten thousand submits

local function draw()
  local r = math.random(10000)
  for _, f in ipairs(FATES) do
    if r <= f[2] then return f[1] end
    r = r - f[2]
  end
  return "ok"
end

local function mentions(err, text)
  return type(err) == "table" and tostring(err.message):find(text, 1, true) ~= nil
end

local is_worker = S.is_worker

local function worker_of(f)
  return tonumber(((f:info().worker or ""):match("^process (%d+)$")))
end

-- Stops each special task (force, kill) once it runs; 60 s without
-- progress counts the rest as stuck.
local function stop_specials(ex, fs, fates, special, tally)
  local left, deadline = #special, core.now() + 60
  local done = {}
  while left > 0 do
    local progressed = false
    for _, j in ipairs(special) do
      local f = fs[j]
      if not done[j] and f:state() ~= "pending" then
        done[j], left, progressed = true, left - 1, true
        if f:done() then
          -- (a random kill got there first: collateral, checked later)
        elseif fates[j]:match("force$") then
          if not f:cancel { force = true } and not f:done() then tally.refused = tally.refused + 1 end
        else
          local pid = worker_of(f)
          if not pid or not is_worker(ex, pid) or not kill_pid(pid) then
            if not f:done() then
              tally.nokill = tally.nokill + 1
              f:cancel { force = true }
            end
          end
        end
      end
    end
    if progressed then
      deadline = core.now() + 60
    elseif core.now() > deadline then
      for _, j in ipairs(special) do
        if not done[j] then
          tally.stuck = tally.stuck + 1
          fs[j]:cancel { force = true }
        end
      end
      return
    else
      weft.sleep(0.0005)
    end
  end
end

-- A random worker known to be ready (it ran a task) is killed: the r-th
-- of them, round.  (r is drawn whatever the pool looks like, so that the
-- draws, and with them every fate, follow from the seed alone.)
local function random_kill(ex, ready, r, tally)
  local pids = {}
  for _, pid in ipairs(ex:stats().pids or {}) do
    if ready[pid] then pids[#pids + 1] = pid end
  end
  if #pids == 0 then return end
  if kill_pid(pids[r % #pids + 1]) then tally.random_kills = tally.random_kills + 1 end
end

-- What a fate's future must have become: true, or false and why not.
local function judge(f, fate, i, arg, cancelled)
  local state = f:state()
  if fate == "ok" or fate == "spawn" or (fate == "cancel" and not cancelled) then
    return state == "finished" and f:result() == 2 * i
  elseif fate == "cancel" or fate:match("force$") then
    return f:cancelled()
  end
  local err = state == "failed" and f:exception()
  if not err then return false end
  if fate == "fail" then
    return err.kind == "task" and type(err.value) == "table" and err.value.code == i
  elseif fate:match("timeout$") then
    return err.kind == "timeout"
  elseif fate:match("exit$") then
    return err.kind == "worker_died" and mentions(err, "status " .. arg)
  else   -- kill, bg_kill
    return err.kind == "worker_died" and mentions(err, "SIGKILL")
  end
end

local function run(ex, n, tally)
  local ready = {}   -- pids seen running a task: started, so safe to kill
  local base = 0
  while base < n do
    local m = math.min(opts.batch, n - base)
    local fs, fates, args, cancelled, special = {}, {}, {}, {}, {}
    for j = 1, m do
      local i = base + j
      local fate = draw()
      local f
      if fate == "fail" then
        f = ex:submit(fail_fn, i, math.random(0, 2))
      elseif fate == "spawn" then
        f = ex:submit(spawn_fn, i, SLEEP)
        tally.spawned = tally.spawned + 1
      elseif fate == "timeout" then
        f = ex:submit(timeout_task)
      elseif fate == "bg_timeout" then
        f = ex:submit(timeout_task, SLEEP)
        tally.spawned = tally.spawned + 1
      elseif fate == "fg_timeout" then
        f = ex:submit(fg_task, SLEEP)
        tally.spawned = tally.spawned + 1
      elseif fate == "exit" or fate == "bg_exit" then
        args[j] = math.random(0, 5)
        f = ex:submit(exit_fn, args[j], fate == "bg_exit" and SLEEP or nil)
        if fate == "bg_exit" then tally.spawned = tally.spawned + 1 end
      elseif fate == "force" or fate == "kill" then
        f = ex:submit(fate == "kill" and kill_task or loop_fn)
        special[#special + 1] = j
      elseif fate == "bg_force" or fate == "bg_kill" then
        f = ex:submit(fate == "bg_kill" and kill_task or loop_fn, SLEEP)
        special[#special + 1] = j
        tally.spawned = tally.spawned + 1
      else
        f = ex:submit(ok_fn, i, math.random(0, 2))
      end
      if fate == "cancel" then cancelled[j] = f:cancel() end
      fs[j], fates[j] = f, fate
      local kill_now, r = math.random(10000) <= RANDOM_KILLS, math.random(1000000)
      if kill_now then random_kill(ex, ready, r, tally) end
      if j % 25 == 0 then   -- learn which workers are up
        for k = j - 24, j do
          local pid = fs[k]:done() and worker_of(fs[k])
          if pid then ready[pid] = true end
        end
      end
    end
    stop_specials(ex, fs, fates, special, tally)
    local special_set = {}
    for _, j in ipairs(special) do special_set[j] = true end
    local _, not_done = weft.wait(fs, { timeout = 120 })
    tally.lost = tally.lost + #not_done
    for j = 1, m do
      local f, fate, i = fs[j], fates[j], base + j
      local pid = f:done() and worker_of(f)
      if pid then ready[pid] = true end
      -- Every task that ran has info().started, however it ended (those
      -- that keep times: weft.task ones, with info().submitted).
      local info = f:info()
      if f:done() and (f:state() ~= "cancelled" or special_set[j]) and info.submitted then
        tally.timed = tally.timed + 1
        if not info.started then tally.no_started = tally.no_started + 1 end
      end
      local key = fate == "cancel" and not cancelled[j] and "cancel-late" or fate
      local t = tally.fates[key] or { good = 0, bad = 0 }
      tally.fates[key] = t
      if not f:done() then
        t.bad = t.bad + 1
      elseif judge(f, fate, i, args[j], cancelled[j]) then
        t.good = t.good + 1
      else
        local err = f:state() == "failed" and f:exception()
        if err and err.kind == "worker_died" and mentions(err, "SIGKILL") then
          tally.collateral = tally.collateral + 1
        else
          t.bad = t.bad + 1
          if not tally.bad_example then
            tally.bad_example = ("task %d (%s) ended %s: %s"):format(i, fate, f:state(),
              err and tostring(err):gsub("\n.*", "") or tostring(f:state() == "finished" and f:result()))
          end
        end
      end
    end
    base = base + m
  end
end

-- === the run ===============================================================

math.randomseed(opts.seed)
local t0 = core.now()
local tally = { fates = {}, lost = 0, stuck = 0, nokill = 0, refused = 0, collateral = 0,
                random_kills = 0, spawned = 0, no_started = 0, timed = 0 }
local ex = weft.processes { workers = opts.workers, name = "chaos", kill_grace = 0.2,
                            max_tasks_per_worker = 500 }
run(ex, opts.tasks, tally)
local seconds = core.now() - t0
local stats = ex:stats()
ex:shutdown { wait = true }

print(("chaos: %d tasks in %.1f s; %d programs started by tasks; %d random kills; "
       .. "%d workers started to replace others"):format(opts.tasks, seconds, tally.spawned,
       tally.random_kills, stats.restarts or -1))
local order = { "ok", "fail", "spawn", "cancel", "cancel-late", "timeout", "bg_timeout",
                "fg_timeout", "exit", "bg_exit", "force", "bg_force", "kill", "bg_kill" }
for _, fate in ipairs(order) do
  local t = tally.fates[fate]
  if t then
    check(t.bad == 0, "%d of %d '%s' tasks ended as expected", t.good, t.good + t.bad, fate)
  elseif fate ~= "cancel-late" then
    check(false, "no '%s' task was drawn (raise --tasks or change the seed)", fate)
  end
end
if tally.bad_example then print("      first mismatch: " .. tally.bad_example) end
check(tally.collateral <= tally.random_kills,
      "tasks failed by random kills (%d) are no more than the random kills (%d)",
      tally.collateral, tally.random_kills)
check(tally.lost == 0 and tally.stuck == 0 and tally.nokill == 0 and tally.refused == 0,
      "no future lost (%d not done in time), none stuck before it ran (%d), no kill missed (%d), "
      .. "no forced cancel refused (%d)", tally.lost, tally.stuck, tally.nokill, tally.refused)
check(tally.no_started == 0 and tally.timed > 0,
      "every weft.task that ran (timeouts, kills) has info().started: %d of %d",
      tally.timed - tally.no_started, tally.timed)
check(stats.completed + stats.failed + stats.cancelled == opts.tasks,
      "stats count every task once: %d completed + %d failed + %d cancelled = %d",
      stats.completed, stats.failed, stats.cancelled, opts.tasks)

-- Processes: none of ours, and none of the tasks' sleeps anywhere.  (Kills
-- are signals: give the kernel a moment, bounded.)
local kids, sleeps
local deadline = core.now() + 10
repeat
  kids, sleeps = children_now(), tagged_sleeps()
  if #kids == 0 and #sleeps == 0 then break end
  weft.sleep(0.05)
until core.now() > deadline
check(#kids == 0, "no child process left (%s)", #kids > 0 and table.concat(kids, " ") or "none")
check(#sleeps == 0, "no program a task started is left (%d of '%s': %s)", #sleeps, SLEEP,
      #sleeps > 0 and table.concat(sleeps, " ") or "none")
for _, pid in ipairs(sleeps) do kill_pid(tonumber(pid)) end

os.exit(summary() == 0 and 0 or 1)
