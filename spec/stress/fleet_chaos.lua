-- spec/stress/fleet_chaos.lua -- the chaos soak of the Redis executor: a
-- stream of tasks through a real redis-server (AOF, appendfsync always) and
-- real `weft worker` processes, while, at random (seeded) moments, a
-- worker is killed with -9 (and a new one started), the server is killed
-- with -9 and restarted from its AOF (it answers LOADING while it reads
-- it), the server is stopped (SIGSTOP) for one to two seconds, every
-- client connection is dropped (CLIENT KILL: the client and the workers
-- reconnect, and the client takes the results it missed from the stored
-- ones), a forged entry (unsigned, or with a wrong signature) is added to
-- the stream, or a copy of a live signed entry is added again (a replay).
-- Messages are signed (a secret on both sides).  The
-- server takes strings of 1 MiB at most (proto-max-bulk-len); one task in
-- 997 returns 2 MiB (it must fail alone, kind serialization) and one in
-- 1009 is submitted with a 2 MiB argument (submit must raise kind
-- serialization).
--
--   lua5.4 spec/stress/fleet_chaos.lua [--tasks N] [--seconds S] [--seed S]
--                                      [--workers W]
--
-- Defaults: 30,000 tasks over 120 s of chaos, seed 16, 3 workers of 2
-- processes each.  scripts/check/fleet_chaos runs a shortened form in
-- `make test`.  LUA_PATH must find weft and spec/helpers (the check sets
-- it), WEFT_BUILD_DIR the weft program.
--
-- Each task appends its number to a file shared by all workers and returns
-- twice its number.  Checks, each counted: no task lost (every future
-- finished, none failed but the oversized ones), none wrong (each result
-- is twice its number), every oversized one failed as it should,
-- none pending once the chaos is over (bounded wait), every task ran at
-- least once (by the file), and no process left (no process carries the
-- run's tag in its environment once the workers are killed and the server
-- stopped).  Duplicates (tasks that ran more than once: delivery is at
-- least once) are counted and printed, not failed.  Every forged and
-- replayed entry must be refused (never run) and end in the dead letters
-- (a copy the client sent again after a lost XADD reply is refused as a
-- replay too), and no other entry may.  It prints the seed,
-- the figures and ends with "N passed, N failed".
local uv = require "luv"
local weft = require "weft"
local R = require "helpers.redis"

local S = dofile((arg[0]:match("^(.*)/") or ".") .. "/stresslib.lua")
local opts = S.options({ tasks = 30000, seconds = 120, seed = 16, workers = 3 }, "fleet_chaos.lua")

local function now() return uv.hrtime() / 1e9 end

math.randomseed(opts.seed)
print(("fleet chaos: seed %d, %d tasks over %d s, %d workers"):format(opts.seed, opts.tasks,
  opts.seconds, opts.workers))

local passed, failed = 0, 0
local function check(ok, what, detail)
  if ok then
    passed = passed + 1
    print("ok      " .. what)
  else
    failed = failed + 1
    print("FAILED  " .. what .. (detail and (": " .. detail) or ""))
  end
end

local Q = "chaos"
local tag = ("chaos-%d-%d"):format(uv.os_getpid(), opts.seed)
local dir = assert(uv.fs_mkdtemp("/tmp/weft-chaos.XXXXXX"))
local ran_file = dir .. "/ran"

-- The task: stands for any idempotent piece of work.
local function job(i, path, big)
  local f = assert(io.open(path, "a"))
  f:write(i, "\n")
  f:close()
  if big then return string.rep("z", 2 * 1048576) end
  return i * 2
end

local BIG_ARG = string.rep("a", 2 * 1048576)
local function big_result(i) return i % 997 == 0 end
local function big_arg(i) return i % 1009 == 0 end
local big_args_raised, big_args = 0, 0

local futures = {}
-- Submits task i (an oversized argument must raise at submit).
local function submit(ex, i)
  if big_arg(i) then
    big_args = big_args + 1
    local ok, err = pcall(ex.submit, ex, job, i, ran_file, false, BIG_ARG)
    if not ok and type(err) == "table" and err.kind == "serialization" then
      big_args_raised = big_args_raised + 1
    end
    futures[i] = false
  else
    futures[i] = ex:submit(job, i, ran_file, big_result(i))
  end
end

local stats = { worker_kills = 0, restarts = 0, loading = 0, stops = 0, forged = 0, replayed = 0,
                client_kills = 0 }
local SECRET = "chaos-secret"
local STREAM, DEAD = "weft:" .. Q .. ":tasks", "weft:" .. Q .. ":dead"
local server, ex
local workers, nworkers = {}, 0

local function start_worker()
  nworkers = nworkers + 1
  local w = R.worker(server.url, {
    queue = Q, workers = 2, heartbeat = 0.2, claim_idle = 1, name = "chaos-" .. nworkers,
    secret = SECRET,
    env = { WEFT_CHAOS_TAG = tag }, args = { "--reconnect-window", "300" },
  })
  workers[#workers + 1] = w
end

-- True while some process carries the run's tag in its environment.
local function tagged_processes()
  local found = {}
  local scan = uv.fs_scandir("/proc")
  while scan do
    local name = uv.fs_scandir_next(scan)
    if not name then break end
    if name:match("^%d+$") then
      local f = io.open("/proc/" .. name .. "/environ", "rb")
      local env = f and f:read("a")
      if f then f:close() end
      if env and env:find("WEFT_CHAOS_TAG=" .. tag, 1, true) then found[#found + 1] = name end
    end
  end
  return found
end

local ok_run, err_run = pcall(function()
  server = R.start { aof = true, args = { "--loading-process-events-interval-bytes", "1024",
                                          "--proto-max-bulk-len", "1048576" } }
  for _ = 1, opts.workers do start_worker() end
  ex = weft.redis { url = server.url, queue = Q, reconnect_window = 300, max_deliveries = 50,
                    secret = SECRET }

  local t0 = now()
  local next_event = t0 + 1 + math.random() * 2
  local submitted = 0
  while now() - t0 < opts.seconds do
    -- Tasks at an even pace over the run.
    local due = math.min(opts.tasks, math.floor(opts.tasks * (now() - t0) / opts.seconds) + 1)
    while submitted < due do
      submitted = submitted + 1
      submit(ex, submitted)
    end
    if now() >= next_event then
      local r = math.random()
      if r < 0.4 then   -- a worker dies; another one starts
        local alive = {}
        for _, w in ipairs(workers) do if w:alive() then alive[#alive + 1] = w end end
        if #alive > 0 then
          alive[math.random(#alive)]:kill("KILL")
          stats.worker_kills = stats.worker_kills + 1
        end
        start_worker()
      elseif r < 0.55 then   -- the server dies and comes back from its AOF
        server:kill()
        server:restart { loading = true }
        local fine, reply = pcall(server.cmd, server, "PING")
        if fine and type(reply) == "table" and tostring(reply.err):find("^LOADING") then
          stats.loading = stats.loading + 1
        end
        stats.restarts = stats.restarts + 1
      elseif r < 0.7 then   -- the server stops for 1 to 2 s
        server.proc:signal("STOP")
        R.sleep(1 + math.random())
        server.proc:signal("CONT")
        stats.stops = stats.stops + 1
      elseif r < 0.8 then   -- a forged entry: unsigned, or signed with garbage
        local fields = math.random() < 0.5 and { "m", "forged task " .. math.random(1e9) }
                       or { "m", "forged task", "s", string.rep("\1", 32) }
        local fine, id = pcall(server.cmd, server, "XADD", STREAM, "*", table.unpack(fields))
        if fine and type(id) == "string" then stats.forged = stats.forged + 1 end
      elseif r < 0.9 then   -- a replay: a live signed entry added again
        local fine, entries = pcall(server.cmd, server, "XREVRANGE", STREAM, "+", "-", "COUNT", 20)
        local e   -- the newest genuine one (not one forged above)
        for _, x in ipairs(fine and type(entries) == "table" and entries or {}) do
          local m = type(x[2]) == "table" and x[2][2]
          if type(m) == "string" and not m:find("^forged") and not e then e = x end
        end
        if e and type(e[2]) == "table" then
          local added, id = pcall(server.cmd, server, "XADD", STREAM, "*", table.unpack(e[2]))
          if added and type(id) == "string" then stats.replayed = stats.replayed + 1 end
        end
      else   -- every client connection dropped: all reconnect
        local fine, n = pcall(server.cmd, server, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        if fine and math.type(n) == "integer" then stats.client_kills = stats.client_kills + 1 end
      end
      next_event = now() + 0.5 + math.random() * 2.5
    end
    R.sleep(0.05)
  end
  while submitted < opts.tasks do
    submitted = submitted + 1
    submit(ex, submitted)
  end
  -- The chaos is over: every task must end, soon.
  local deadline = now() + 120
  for _, f in ipairs(futures) do
    if f then pcall(f.result, f, math.max(0.01, deadline - now())) end
  end
  -- Every forged and replayed entry ends in the dead letters (a worker
  -- killed while it held one leaves it to the next, after claim_idle).
  -- (A copy the client itself sent again, when its XADD got no answer
  -- before a restart or a dropped connection, is refused as replayed too:
  -- the task runs once.  So replays are at least those injected.)
  local want = stats.forged + stats.replayed
  while now() < deadline do
    local fine, n = pcall(server.cmd, server, "XLEN", DEAD)
    stats.dead = fine and math.type(n) == "integer" and n or stats.dead
    if stats.dead and stats.dead >= want then break end
    R.sleep(0.1)
  end
  stats.elapsed = now() - t0
  -- Why each entry was dead-lettered, for the figures.
  stats.reasons = {}
  local fine, dead = pcall(server.cmd, server, "XRANGE", DEAD, "-", "+")
  stats.forged_dead, stats.other_dead = 0, 0
  for _, e in ipairs(fine and type(dead) == "table" and dead or {}) do
    local fields = e[2] or {}
    local m, why = "", ""
    for j = 1, #fields - 1, 2 do
      if fields[j] == "m" then m = tostring(fields[j + 1]) end
      if fields[j] == "reason" then why = tostring(fields[j + 1]) end
    end
    if m:find("^forged task") then
      stats.forged_dead = stats.forged_dead + 1
    elseif not why:find("^replayed") then
      stats.other_dead = stats.other_dead + 1
    end
    for j = 1, #fields - 1, 2 do
      if fields[j] == "reason" then
        why = tostring(fields[j + 1]):match("^[^:;(]*")
        stats.reasons[why] = (stats.reasons[why] or 0) + 1
        if os.getenv("CHAOS_DEBUG") then
          local parts = {}
          for k = 1, #fields - 1, 2 do parts[#parts + 1] = fields[k] .. "=" .. tostring(fields[k + 1]):sub(1, 50):gsub("[^%g ]", "?") end
          print("  DEAD " .. e[1] .. " " .. table.concat(parts, " "))
        end
      end
    end
  end
end)
check(ok_run, "the run itself", ok_run or tostring(err_run))

local lost, wrong, pending, kinds = 0, 0, 0, {}
local big_results, big_results_failed = 0, 0
for i, f in ipairs(futures) do
  if not f then
    -- (an oversized argument: counted above)
  elseif not f:done() then
    pending = pending + 1
  elseif big_result(i) then
    big_results = big_results + 1
    local fine, v = pcall(f.result, f, 0)
    if not fine and type(v) == "table" and v.kind == "serialization" then
      big_results_failed = big_results_failed + 1
    end
  else
    local fine, v = pcall(f.result, f, 0)
    if not fine then
      lost = lost + 1
      local k = type(v) == "table" and v.kind or "?"
      kinds[k] = (kinds[k] or 0) + 1
      if lost <= 3 then print("  lost task " .. i .. ": " .. tostring(v)) end
    elseif v ~= 2 * i then
      wrong = wrong + 1
    end
  end
end
local runs = {}
local f = io.open(ran_file, "r")
if f then
  for line in f:lines() do
    local i = math.tointeger(tonumber(line))
    if i then runs[i] = (runs[i] or 0) + 1 end
  end
  f:close()
end
local never, duplicates = 0, 0
for i = 1, #futures do
  if not futures[i] then   -- (never submitted: an oversized argument)
    if runs[i] then never = never + 1 end   -- (counted as wrong: it must not run)
  elseif not runs[i] then never = never + 1
  elseif runs[i] > 1 then duplicates = duplicates + 1 end
end
local s = ex and ex:stats() or {}
if ex then pcall(ex.shutdown, ex, { wait = true, cancel_futures = true }) end
pcall(R.cleanup)
local left = {}
local gone_by = now() + 10
repeat
  left = tagged_processes()
  if #left > 0 then R.sleep(0.1) end
until #left == 0 or now() > gone_by
os.execute("rm -rf '" .. dir .. "'")

local k = {}
for name, n in pairs(kinds) do k[#k + 1] = name .. " " .. n end
print(("tasks %d, worker kills %d, server restarts %d (%d answering LOADING), server stops %d, "
       .. "%.1f s"):format(#futures, stats.worker_kills, stats.restarts, stats.loading, stats.stops,
       stats.elapsed or -1))
print(("lost %d%s, wrong %d, pending %d, never ran %d, duplicated %d, redelivered %s, processes left %d")
  :format(lost, #k > 0 and (" (" .. table.concat(k, ", ") .. ")") or "", wrong, pending, never,
          duplicates, tostring(s.redelivered), #left))
print(("forged %d, replayed %d, dead letters %s (refused, never run); client connections dropped %d times")
  :format(stats.forged, stats.replayed, tostring(stats.dead), stats.client_kills))
for why, n in pairs(stats.reasons or {}) do print(("  dead letter: %d x %s"):format(n, why)) end
print(("oversized: %d of %d arguments raised at submit, %d of %d results failed their task")
  :format(big_args_raised, big_args, big_results_failed, big_results))
check(#futures == opts.tasks, "every task was submitted", #futures .. " of " .. opts.tasks)
check(lost == 0, "no task lost", lost .. " failed")
check(wrong == 0, "no result wrong", wrong .. " wrong")
check(pending == 0, "no task pending after the chaos", pending .. " pending")
check(big_args_raised == big_args, "every oversized argument raised kind serialization at submit",
      big_args_raised .. " of " .. big_args)
check(big_results_failed == big_results, "every oversized result failed its task with kind serialization",
      big_results_failed .. " of " .. big_results)
check(never == 0, "every task ran once at least (and no refused one ran)", never .. " wrong")
check(#left == 0, "no process left", table.concat(left, " "))
-- (A forged XADD whose reply was lost, under a stopped or restarting
-- server, is not counted as added but may be there: hence "at least".)
local replays = 0
for why, n in pairs(stats.reasons or {}) do
  if why:find("^replayed") then replays = replays + n end
end
check((stats.forged_dead or 0) >= stats.forged, "every forged entry was refused and dead-lettered",
      tostring(stats.forged_dead) .. " forged dead letters, for " .. stats.forged .. " forged")
check(stats.other_dead == 0, "no genuine task was dead-lettered but for replays",
      tostring(stats.other_dead) .. " genuine tasks dead-lettered")
check(replays >= stats.replayed, "every replayed entry was refused as a replay",
      replays .. " refused as replays, for " .. stats.replayed .. " injected")
print(("%d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
