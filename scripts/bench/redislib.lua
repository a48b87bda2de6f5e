--[[ Shared by the Redis benchmarks (redis_map.lua, redis_roundtrip.lua):
a private redis-server and local `weft worker` processes on it.

    local redis = dofile(bench_dir .. "/redislib.lua")
    redis.with_workers({ workers = 2, threads = true, prefetch = 8 },
      function(url, setup) ... end)

with_workers starts /usr/bin/redis-server (REDIS_SERVER overrides) in a
fresh `mktemp -d` directory, listening on a Unix socket there only
(--port 0 --save "" --appendonly no), waits for the socket and a PING
(redis-cli -s), starts `workers` processes of `weft worker URL --queue
bench --workers 1` (plus --threads and --prefetch N when asked), waits for
the "weft worker: ready" line in each one's log, then calls fn(url, setup)
(setup.describe: the configuration in words, for a note; setup.check():
raises if a worker or the server has died). Whatever fn does,
raises or not, the workers get SIGTERM (SIGKILL 5 s later), then the server,
and the directory is removed; fn's error is raised again after that.

Only processes started here are signalled, and only while their
/proc/PID/stat start time still matches (so a reused pid is never hit).
A watchdog shell stops them and removes the directory if this Lua process
dies without cleaning up (e.g. killed by the runner's time limit).

Tasks and workers share the secret SECRET (WEFT_SECRET for the workers,
secret= for weft.redis), so messages are signed as a deployment's are.
]]
local uv = require "luv"

local M = {}

M.QUEUE = "bench"
M.SECRET = "weft-bench-secret"
M.READY = "weft worker: ready"

local here = arg[0]:match("^(.*)/") or "."

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function shell_line(command)
  local pipe = assert(io.popen(command))
  local line = pipe:read("l")
  pipe:close()
  return line
end

local function absolute(path)
  return assert(shell_line("cd " .. quote(path) .. " && pwd"), "cannot resolve " .. path)
end

local top = absolute(here .. "/../..")
M.WEFT = (os.getenv("WEFT_BUILD_DIR") or (top .. "/build")) .. "/weft/weft"
M.REDIS_SERVER = os.getenv("REDIS_SERVER") or "/usr/bin/redis-server"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

local function now() return uv.hrtime() / 1e9 end
local function sleep(seconds) uv.sleep(math.max(1, math.floor(seconds * 1000))) end

-- Polls pred() every 20 ms until it returns a true value (returned), or
-- raises after `seconds` saying what it waited for, plus detail().
local function wait_until(what, seconds, pred, detail)
  local deadline = now() + seconds
  while true do
    local v = pred()
    if v then return v end
    if now() > deadline then
      error(("gave up after %g s waiting for %s%s"):format(seconds, what,
        detail and ("\n" .. detail()) or ""), 2)
    end
    sleep(0.02)
  end
end

-- === processes ================================================================

-- Field 22 of /proc/PID/stat (start time in clock ticks) and the state, or
-- nil when there is no such process.
local function proc_stat(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  if not stat then return nil end
  local rest = stat:match(".*%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  -- rest starts at field 3 (state); field 22 is rest[20]
  return fields[20], fields[1]
end

local Proc = {}
Proc.__index = Proc

-- Starts argv in the background (stdin /dev/null, stdout and stderr to
-- `log`) and returns it; the shell that starts it exits at once, so the
-- process is reaped by init (or the nearest subreaper), not by us.
local function spawn(argv, log, what)
  local words = {}
  for i, a in ipairs(argv) do words[i] = quote(a) end
  local line = shell_line(("%s </dev/null >%s 2>&1 & echo $!"):format(
    table.concat(words, " "), quote(log)))
  local pid = assert(math.tointeger(tonumber(line)), "cannot start " .. what)
  local p = setmetatable({ pid = pid, log = log, what = what }, Proc)
  p.start = proc_stat(pid)   -- nil if it already exited
  return p
end

-- True while our process runs (not a zombie, and not a reused pid).
function Proc:alive()
  if not self.start then return false end
  local start, state = proc_stat(self.pid)
  return start == self.start and state ~= "Z"
end

function Proc:signal(sig)
  if self:alive() then uv.kill(self.pid, sig) end
end

function Proc:output() return read(self.log) or "" end

-- SIGTERM, up to `grace` seconds to exit, then SIGKILL (and a little wait).
function Proc:stop(grace)
  if not self:alive() then return true end
  self:signal("sigterm")
  local deadline = now() + grace
  while self:alive() and now() < deadline do sleep(0.02) end
  if self:alive() then
    io.stderr:write(("redislib: %s (pid %d) ignored SIGTERM for %g s: SIGKILL\n"):format(
      self.what, self.pid, grace))
    self:signal("sigkill")
    deadline = now() + 5
    while self:alive() and now() < deadline do sleep(0.02) end
    return false
  end
  return true
end

-- === the watchdog ==============================================================

-- Watches this Lua process; when it is gone, TERMs then KILLs every pid
-- listed in DIR/pids (each line "pid starttime", checked against /proc)
-- and removes DIR. Signals are ignored so the runner's SIGTERM to the
-- process group leaves it to do its job.
local WATCHDOG = [[
trap '' TERM INT HUP
lua=$1 dir=$2
while kill -0 "$lua" 2>/dev/null && [ -d "$dir" ] && [ ! -e "$dir/done" ]; do sleep 0.2; done
{ [ ! -d "$dir" ] || [ -e "$dir/done" ]; } && exit 0
ours() { [ "$(cut -d')' -f2- /proc/$1/stat 2>/dev/null | awk '{print $20}')" = "$2" ]; }
if [ -f "$dir/pids" ]; then
  while read -r pid start; do ours "$pid" "$start" && kill -TERM "$pid"; done < "$dir/pids"
  sleep 2
  while read -r pid start; do ours "$pid" "$start" && kill -KILL "$pid"; done < "$dir/pids"
fi
rm -rf "$dir"
]]

-- === with_workers ==============================================================

local function describe(opts)
  return ("%d workers x --workers 1 %s, prefetch %s"):format(opts.workers,
    opts.threads and "--threads" or "(process)",
    opts.prefetch and tostring(opts.prefetch) or "default")
end
M.describe = describe

-- An integer setting from the environment: `default` when unset, nil for
-- the word "default" (the program's own default).
function M.setting(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  if v == "default" then return nil end
  return assert(math.tointeger(tonumber(v)), name .. " must be an integer or \"default\"")
end

function M.with_workers(opts, fn)
  local dir = assert(shell_line("mktemp -d"), "mktemp -d failed")
  assert(dir:match("^/") and not dir:find("'"), "odd temp dir " .. dir)
  local socket = dir .. "/r.sock"
  local url = "unix://" .. socket
  local server
  local workers = {}
  local pids = assert(io.open(dir .. "/pids", "w"))
  local function track(p)
    if p.start then
      pids:write(p.pid, " ", p.start, "\n")
      pids:flush()
    end
    return p
  end

  local dog_ok = os.execute(("sh -c %s sh %d %s </dev/null >/dev/null 2>&1 &"):format(
    quote(WATCHDOG), math.tointeger(uv.os_getpid()), quote(dir)))
  assert(dog_ok, "cannot start the watchdog")

  local ok, err = pcall(function()
    server = track(spawn({ M.REDIS_SERVER, "--port", "0", "--unixsocket", socket,
      "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir },
      dir .. "/redis.log", "redis-server"))
    wait_until("redis-server to answer PING on " .. socket, 10, function()
      if not server:alive() then
        error("redis-server exited:\n" .. server:output(), 0)
      end
      return uv.fs_stat(socket) ~= nil and
        shell_line("redis-cli -s " .. quote(socket) .. " ping 2>/dev/null") == "PONG"
    end, function() return server:output() end)

    for i = 1, opts.workers do
      local argv = { "env", "WEFT_SECRET=" .. M.SECRET, M.WEFT, "worker", url,
        "--queue", M.QUEUE, "--workers", "1" }
      if opts.threads then argv[#argv + 1] = "--threads" end
      if opts.prefetch then
        argv[#argv + 1] = "--prefetch"
        argv[#argv + 1] = tostring(opts.prefetch)
      end
      workers[i] = track(spawn(argv, ("%s/worker%d.log"):format(dir, i), "weft worker " .. i))
    end
    for _, w in ipairs(workers) do
      wait_until(w.what .. "'s ready line", 30, function()
        if w:output():find(M.READY, 1, true) then return true end
        if not w:alive() then
          error(w.what .. " exited before it was ready:\n" .. w:output(), 0)
        end
      end, function() return w:output() end)
    end
    -- Raises at once if a worker or the server is no longer running (the
    -- tasks would otherwise wait for a claim or for good).
    local function check()
      for _, w in ipairs(workers) do
        if not w:alive() then error(w.what .. " is gone", 2) end
      end
      if not server:alive() then error("redis-server is gone", 2) end
    end
    return fn(url, { describe = describe(opts), dir = dir, workers = workers, check = check })
  end)

  -- A worker that died explains most failures: its last log line (e.g. a
  -- glibc abort) goes first in the error, where the runner's table shows it.
  local deaths = {}
  if not ok then
    for _, w in ipairs(workers) do
      if w.start and not w:alive() then
        local last
        for line in w:output():gmatch("[^\n]+") do last = line end
        deaths[#deaths + 1] = ("%s died (%s)"):format(w.what, last or "no output")
      end
    end
    if server and not server:alive() then deaths[#deaths + 1] = "redis-server died" end
  end

  -- Cleanup, whatever happened: workers first (they finish their tasks),
  -- then the server, then the directory.
  pids:close()
  local complaints = {}
  for _, w in ipairs(workers) do
    if not w:stop(5) then complaints[#complaints + 1] = w.what .. " needed SIGKILL" end
  end
  if server then server:stop(5) end
  local logs = {}
  if not ok then   -- the workers' logs say what they saw
    for _, w in ipairs(workers) do
      logs[#logs + 1] = ("\n--- %s log:\n%s"):format(w.what, w:output())
    end
  end
  io.open(dir .. "/done", "w"):close()   -- the watchdog exits
  sleep(0.3)
  os.execute("rm -rf " .. quote(dir))
  if not ok then
    if #deaths > 0 then err = table.concat(deaths, "; ") .. ": " .. tostring(err) end
    error(tostring(err) .. table.concat(logs), 0)
  end
  for _, c in ipairs(complaints) do io.stderr:write("redislib: ", c, "\n") end
  return err
end

return M
