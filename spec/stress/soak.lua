-- spec/stress/soak.lua -- the soak: many tasks through a thread pool and a
-- process pool, with failures, timeouts, cancels, forced cancels and worker
-- deaths mixed in at random (seeded), checking that every future ends the
-- way its task earned, that each completes exactly once, that memory comes
-- back and that no thread or process is left behind.
--
--   lua5.4 spec/stress/soak.lua [--threads N] [--processes M] [--seed S]
--                               [--batch B] [--workers W] [--progress P]
--
-- Defaults: the full soak (1,000,000 thread tasks, 200,000 process tasks,
-- seed 8).  `make stress` runs it so; scripts/check/stress runs a shortened
-- form.  LUA_PATH/LUA_CPATH must find weft (scripts/check/stress sets them).
--
-- Every task's fate is drawn from the seed before it is submitted, so the
-- expected outcome of each one is known:
--   ok        returns 2 * i                      -> finished with 2 * i
--   fail      error({code = i})                  -> failed, kind task, value.code == i
--   timeout   loops past its 20 ms timeout       -> failed, kind timeout
--   force     loops; cancel{force=true} once it runs -> cancelled
--   cancel    f:cancel() right after submit      -> cancelled if that returned true,
--                                                   else finished with 2 * i
--   exit      os.exit(3) in the worker (processes) -> failed, kind worker_died
--   kill      loops; SIGKILL of the worker process running it once it runs
--             (f:info().worker, which must be among ex:stats().pids)
--                                                 -> failed, kind worker_died
-- Tasks queued behind an exit or a kill in that worker have not started:
-- they go back to the queue and must end as their own fate says.
--
-- Checks, each counted: per pool and fate, every future ended as expected;
-- no future was lost (all done) and none was stuck; every done-callback
-- ran exactly once per future; RSS after the run, once the pools are shut
-- down and collected and a full GC ran, is within 10% of the RSS measured
-- after a warm-up (the same mix, a tenth of the run, through the same
-- pools, measured with them idle); no thread is left but the main one and
-- weft's deadline service (one per process, kept until exit); no child
-- process is left.  It prints tasks/s per pool and RSS at start, after the
-- warm-up, at its peak and at the end.  SOAK_ONLY=fate draws only that
-- fate (0.5% of tasks) besides ok, to chase a defect.
--
-- It ends with "N passed, N failed"; each line before that is one check.
local weft = require "weft"
local core = require "weft.core"

-- === options ===============================================================

local S = dofile((arg[0]:match("^(.*)/") or ".") .. "/stresslib.lua")
local opts = S.options({ threads = 1000000, processes = 200000, seed = 8, batch = 2000, workers = 4,
                         progress = 100000 }, "soak.lua")

io.stdout:setvbuf("line")
print(("soak: %d thread tasks, %d process tasks, %d workers each, batches of %d, seed %d")
      :format(opts.threads, opts.processes, opts.workers, opts.batch, opts.seed))
print(("soak: rerun with: lua5.4 spec/stress/soak.lua --threads %d --processes %d --seed %d --batch %d --workers %d")
      :format(opts.threads, opts.processes, opts.seed, opts.batch, opts.workers))

-- === the machine's view ====================================================

local read_file, list_dir, mypid = S.read_file, S.list_dir, S.mypid
local threads_now, children_now, kill_pid = S.threads_now, S.children_now, S.kill_pid

local function status_kb(field)
  local s = read_file("/proc/self/status") or ""
  return tonumber(s:match(field .. ":%s*(%d+) kB")) or 0
end

local function rss_mb() return status_kb("VmRSS") / 1024 end
local function lua_mb() return collectgarbage("count") / 1024 end

-- === checks ================================================================

local check, summary = S.checks()

-- === the tasks =============================================================

local function ok_fn(i) return 2 * i end
local function fail_fn(i) error({ code = i }) end
local function loop_fn() while true do end end
local function exit_fn() os.exit(3) end
local timeout_task = weft.task { loop_fn, name = "soak-timeout", timeout = 0.02 }
local kill_task = weft.task { loop_fn, name = "soak-kill" }

-- Fates and their weights per ten thousand tasks.
local FATES = {
  threads = { { "fail", 200 }, { "cancel", 50 }, { "timeout", 5 }, { "force", 5 } },
  processes = { { "fail", 200 }, { "cancel", 50 }, { "timeout", 10 }, { "force", 10 },
                { "exit", 10 }, { "kill", 10 } },
}

if os.getenv("SOAK_ONLY") then   -- (see the top)
  for kind in pairs(FATES) do FATES[kind] = { { os.getenv("SOAK_ONLY"), 50 } } end
end

local function draw(kind)
  local r = math.random(10000)
  for _, f in ipairs(FATES[kind]) do
    if r <= f[2] then return f[1] end
    r = r - f[2]
  end
  return "ok"
end

local is_worker = S.is_worker

-- Stops each special task (force, kill) once it runs.  In any order: one
-- may run before another submitted earlier (a task behind a killed one in
-- its worker's pipe goes back to the queue while other workers take later
-- ones), and the loops of later ones may hold every worker meanwhile.
-- Gives up after 60 s without progress (counted as stuck).
local function stop_specials(ex, fs, fates, special, tally)
  local left, deadline = #special, core.now() + 60
  local done = {}
  while left > 0 do
    local progressed = false
    for _, j in ipairs(special) do
      local f = fs[j]
      if not done[j] and f:state() ~= "pending" then
        done[j], left, progressed = true, left - 1, true
        if fates[j] == "force" then
          if not f:cancel { force = true } then tally.refused = (tally.refused or 0) + 1 end
        else
          -- The process running it (f:info()), one of the pool's workers.
          local pid = tonumber(((f:info().worker or ""):match("^process (%d+)$")))
          if not pid or not is_worker(ex, pid) or not kill_pid(pid) then
            tally.nokill = (tally.nokill or 0) + 1
            f:cancel { force = true }
          end
        end
      end
    end
    if progressed then
      deadline = core.now() + 60
    elseif core.now() > deadline then
      for _, j in ipairs(special) do
        if not done[j] then
          tally.stuck = (tally.stuck or 0) + 1
          fs[j]:cancel { force = true }
        end
      end
      return
    else
      weft.sleep(0.0005)
    end
  end
end

-- Runs `n` tasks through ex; returns the tallies.
local function soak(kind, ex, n, tally)
  local B = opts.batch
  local base = 0
  while base < n do
    local m = math.min(B, n - base)
    local fs, fates, cancelled, calls = {}, {}, {}, {}
    local special = {}
    local function on_done(f) calls[f] = (calls[f] or 0) + 1 end
    for j = 1, m do
      local i = base + j
      local fate = draw(kind)
      local f
      if fate == "fail" then
        f = ex:submit(fail_fn, i)
      elseif fate == "timeout" then
        f = ex:submit(timeout_task)
      elseif fate == "force" then
        f = ex:submit(loop_fn)
        special[#special + 1] = j
      elseif fate == "exit" then
        f = ex:submit(exit_fn)
      elseif fate == "kill" then
        f = ex:submit(kill_task)
        special[#special + 1] = j
      else
        f = ex:submit(ok_fn, i)
      end
      f:add_done_callback(on_done)
      if fate == "cancel" then cancelled[j] = f:cancel() end
      fs[j], fates[j] = f, fate
    end
    stop_specials(ex, fs, fates, special, tally)
    local _, not_done = weft.wait(fs, { timeout = 120 })
    if #not_done > 0 then tally.lost = (tally.lost or 0) + #not_done end
    core.dispatch()   -- every done-callback of this batch runs now
    for j = 1, m do
      local f, fate, i = fs[j], fates[j], base + j
      local good
      if not f:done() then
        good = false   -- (lost: counted above; result() would wait for ever)
      elseif fate == "ok" or (fate == "cancel" and not cancelled[j]) then
        good = f:state() == "finished" and f:result() == 2 * i
      elseif fate == "cancel" or fate == "force" then
        good = f:cancelled()
      else
        local err = f:state() == "failed" and f:exception()
        local want = fate == "fail" and "task" or fate == "timeout" and "timeout" or "worker_died"
        good = err and err.kind == want and (fate ~= "fail" or (type(err.value) == "table" and err.value.code == i))
        if not good and err and not tally.example then tally.example = tostring(err) end
      end
      local key = fate == "cancel" and (cancelled[j] and "cancel" or "cancel-late") or fate
      local t = tally[key] or { good = 0, bad = 0 }
      tally[key] = t
      if good then t.good = t.good + 1 else t.bad = t.bad + 1 end
      if not good and not tally.bad_example then
        tally.bad_example = ("task %d (%s) ended %s"):format(i, fate, f:state())
      end
      local c = calls[f] or 0
      if c == 1 then tally.once = tally.once + 1 else tally.not_once = tally.not_once + 1 end
    end
    base = base + m
    tally.peak = math.max(tally.peak, rss_mb())
    if base // opts.progress > (base - m) // opts.progress then
      print(("  %s: %d tasks, %.1f s, rss %.1f MB"):format(kind, base, core.now() - tally.t0, rss_mb()))
    end
  end
end

local function new_tally() return { once = 0, not_once = 0, peak = 0, t0 = core.now() } end

local function report(kind, tally, n, seconds)
  print(("%s: %d tasks in %.1f s, %.0f tasks/s"):format(kind, n, seconds, n / seconds))
  local fates = { "ok", "fail", "cancel", "cancel-late", "timeout", "force", "exit", "kill" }
  local want = { ok = "finished with 2*i", fail = "failed, kind task, its value", cancel = "cancelled",
                 ["cancel-late"] = "cancel() came too late: finished with 2*i",
                 timeout = "failed, kind timeout", force = "cancelled by cancel{force=true}",
                 exit = "failed, kind worker_died (os.exit)", kill = "failed, kind worker_died (SIGKILL)" }
  for _, fate in ipairs(fates) do
    local t = tally[fate]
    local expected = fate ~= "cancel-late" and fate ~= "exit" and fate ~= "kill"
    if kind == "processes" and (fate == "exit" or fate == "kill") then expected = true end
    if t then
      check(t.bad == 0, "%s: %d of %d '%s' tasks %s", kind, t.good, t.good + t.bad, fate, want[fate])
    elseif expected then
      check(false, "%s: no '%s' task was drawn (raise the count or change the seed)", kind, fate)
    end
  end
  if tally.bad_example then print("      first mismatch: " .. tally.bad_example) end
  if tally.example then print("      its error: " .. tally.example) end
  check((tally.lost or 0) == 0 and (tally.stuck or 0) == 0 and (tally.nokill or 0) == 0
        and (tally.refused or 0) == 0,
        "%s: no future lost (%d not done in time), no special task stuck before it ran (%d), "
        .. "no kill missed (%d), no forced cancel refused (%d)", kind, tally.lost or 0,
        tally.stuck or 0, tally.nokill or 0, tally.refused or 0)
  check(tally.not_once == 0 and tally.once == n,
        "%s: done-callbacks ran exactly once for %d of %d futures (%d not once)",
        kind, tally.once, n, tally.not_once)
end

-- === the run ===============================================================

math.randomseed(opts.seed)
local nthreads_start, names_start = threads_now()

local function settle()
  for _ = 1, 3 do collectgarbage("collect") end
  core.dispatch()
  for _ = 1, 2 do collectgarbage("collect") end
end

local function rss_line(what)
  return ("%s %.1f MB (anonymous %.1f, files %.1f; Lua heap %.1f)"):format(what, rss_mb(),
    status_kb("RssAnon") / 1024, status_kb("RssFile") / 1024, lua_mb())
end

local rss_start = rss_mb()
print(rss_line("rss at start:"))
local pools = {
  threads = weft.threads { workers = opts.workers, name = "soak-threads" },
  processes = weft.processes { workers = opts.workers, name = "soak-processes", kill_grace = 0.5 },
}

-- Warm-up: the same mix through the same pools, a tenth of the run (at
-- least 20,000 and 4,000 tasks, at most 100,000 and 20,000), so that the
-- workers' states, caches, free lists and allocator arenas reach their
-- working size.  Memory is measured then, with the pools idle.
soak("threads", pools.threads, math.min(math.max(opts.threads // 10, 20000), 100000, opts.threads),
     new_tally())
soak("processes", pools.processes,
     math.min(math.max(opts.processes // 10, 4000), 20000, opts.processes), new_tally())
settle()
local rss_warm = rss_mb()
print(rss_line("rss after the warm-up:"))

local out = {}
do
  local tally, t0 = new_tally(), core.now()
  soak("threads", pools.threads, opts.threads, tally)
  out.threads = { tally, core.now() - t0 }
end
do
  local tally, t0 = new_tally(), core.now()
  soak("processes", pools.processes, opts.processes, tally)
  out.processes = { tally, core.now() - t0, pools.processes:stats().restarts }
end
local peak = status_kb("VmHWM") / 1024
report("threads", out.threads[1], opts.threads, out.threads[2])
report("processes", out.processes[1], opts.processes, out.processes[2])
print(("processes: %d worker processes started to replace others"):format(out.processes[3] or -1))

-- The program is done: its futures are dropped, the pools shut down and
-- collected.  Memory, threads and children must come back.
collectgarbage("collect")
pools.threads:shutdown()
pools.processes:shutdown()
pools = nil
settle()
local rss_end = rss_mb()
print(rss_line("rss at the end:"))
print(("rss: start %.1f MB, after the warm-up %.1f MB, peak %.1f MB (during threads %.1f, "
       .. "during processes %.1f), end %.1f MB")
      :format(rss_start, rss_warm, peak, out.threads[1].peak, out.processes[1].peak, rss_end))
check(rss_end <= rss_warm * 1.10,
      "rss after the run and shutdown (%.1f MB) within 10%% of after the warm-up (%.1f MB): %+.1f%%",
      rss_end, rss_warm, (rss_end / rss_warm - 1) * 100)

-- Threads: only the main one and weft's deadline service (one per process,
-- started on first use, kept until exit) may remain.  A heap trim runs on a
-- short-lived thread of its own (weft:trim): waited for, not counted.
local nthreads, names, extra
local trims_until = core.now() + 10
repeat
  nthreads, names = threads_now()
  extra = {}
  local trimming = false
  for _, name in ipairs(names) do
    if name:match(":weft:trim$") then
      trimming = true
    elseif not name:match(":weft:deadline$") and name:match("^%d+") ~= tostring(mypid) then
      extra[#extra + 1] = name
    end
  end
  if not trimming then break end
  weft.sleep(0.01)
until core.now() > trims_until
check(#extra == 0, "no thread left: %d now (%s), %d at start; not expected: %s", nthreads,
      table.concat(names, " "), nthreads_start, #extra > 0 and table.concat(extra, " ") or "none")

local kids
local deadline = core.now() + 10
repeat
  kids = children_now()
  if #kids == 0 then break end
  weft.sleep(0.05)
until core.now() > deadline
check(#kids == 0, "no child process left (%s)", #kids > 0 and table.concat(kids, " ") or "none")

os.exit(summary() == 0 and 0 or 1)
