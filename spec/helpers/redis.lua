-- helpers/redis.lua -- real redis-server processes and real `weft worker`
-- processes for the Redis executor specs, and a tiny binary-safe client.
--
--   local R = require "helpers.redis"
--
--   local server = R.start { aof = true, port = true }
--   server.url, server.tcp_url   "unix:///tmp/weft-redis.X/redis.sock",
--                                "redis://127.0.0.1:PORT/0" (port = true)
--   server.socket, server.port, server.dir, server.pid
--   server:cmd("XRANGE", key, "-", "+")   -> the parsed reply
--   server:kill()      kill -9, keeping the directory (and its AOF)
--   server:restart()   the same directory, socket, port and options again
--   server:restart { loading = true }   the same, returning as soon as the
--                      server answers, be it with LOADING (it still reads
--                      its AOF) or PONG
--   server:stop()      SIGTERM, wait, remove the directory
--
--   local w = R.worker(server.url, { queue = "q", workers = 2, name = "w1",
--                                    secret = "s", heartbeat = 0.2 })
--   w:log(), w:wait_log(text [, seconds]), w:wait_line({ texts } [, seconds])
--   w:kill([sig]), w:term(), w:wait_exit([seconds]) -> status, w:alive()
--
--   R.cleanup()        kill every worker, stop every server (after_each)
--   R.free_port()      a loopback TCP port nobody listens on right now
--   R.logs()           the log of every worker started since the last
--                      R.cleanup(), for assertion messages
--   R.wait_until(what, seconds, pred [, detail])
--   R.sleep(seconds)
--
-- Options of R.start: aof (appendonly yes, appendfsync always), password
-- (requirepass), user + pass (an ACL user with every right; the default
-- user is turned off), port (also listen on a free loopback TCP port),
-- args (more words for the command line, as { "--maxmemory", "10mb" }).
-- The server listens on a Unix socket in a fresh directory made with
-- mkdtemp, with `--save ""`.
--
-- Options of R.worker: queue, workers, threads (true: --threads),
-- heartbeat, claim_idle, name, secret (WEFT_SECRET; without it the
-- variable is removed from the worker's environment), args (more words for
-- the command line), env (more variables), nowait (do not wait for the
-- "weft worker: ready" line), ready_timeout (how long to wait for it,
-- default 60 s), program (default $WEFT_BUILD_DIR/weft/weft).
-- The worker's stdout and stderr go to a log file in a fresh directory.
--
-- How processes are run.  Each one is started through a small bash launcher
-- that puts it in the background, writes its pid to a file, waits for it
-- and writes its exit status to another file (128 + N when signal N killed
-- it).  The launcher stays the process's parent until then, so the pid
-- cannot be reused while the spec may still signal it, and the spec reads
-- an exact exit status.  Beside it runs a watchdog that checks once a
-- second that the spec process (busted) is alive, and kills the process
-- if it is not (the launcher then removes the process's directory): a
-- spec file killed by its time limit leaves nothing behind.  The launcher
-- first closes every descriptor but stdin, stdout and stderr, so that the
-- processes it starts hold none of the spec process's sockets.  Only pids
-- started here are ever signalled.
--
-- The client (server:cmd) speaks RESP over the Unix socket with luv, one
-- connection per call (AUTH first when the server wants a password), so it
-- reads and writes bytes exactly: specs copy and tamper with task messages.
-- Replies: simple and bulk strings as Lua strings, integers as integers,
-- arrays as Lua lists (a nil element leaves a hole), a nil bulk or array as
-- nil, an error reply as { err = "ERR ..." }.

local uv = require "luv"
local util = require "helpers.util"

local R = {}

R.READY = "weft worker: ready"

local servers, workers = {}, {}   -- started here, for R.cleanup()

-- === small pieces =========================================================

local sh_quote, read = util.quote, util.read

local function clock() return uv.hrtime() / 1e9 end

function R.sleep(seconds) uv.sleep(math.max(1, math.floor(seconds * 1000))) end

-- Polls pred() every 20 ms until it returns a true value, which it returns.
-- The bound is only reached when something is broken; then it raises an
-- error saying what it waited for, with detail() appended when given.
function R.wait_until(what, seconds, pred, detail)
  local deadline = clock() + seconds
  while true do
    local v = pred()
    if v then return v end
    if clock() > deadline then
      local more = detail and ("\n" .. tostring(detail())) or ""
      error(("gave up after %g s waiting for %s%s"):format(seconds, what, more), 2)
    end
    R.sleep(0.02)
  end
end

local function mkdtemp(prefix)
  return assert(uv.fs_mkdtemp("/tmp/" .. prefix .. ".XXXXXX"))
end

-- Removes a directory made by mkdtemp (and only such a directory).
local function remove_dir(dir)
  assert(dir:match("^/tmp/weft%-[%w]+%.[%w]+$"), "refusing to remove " .. dir)
  os.execute("rm -rf " .. sh_quote(dir))
end

local spec_pid = math.tointeger(uv.os_getpid())

-- === processes ============================================================

-- Runs "$@" in the background, as the header explains.  $1 is the spec's
-- pid, $2 and $3 the pid and exit status files.
local LAUNCHER = [[
# No descriptor of the spec process (an executor's Redis connection that
# lacks close-on-exec) may live on in the processes started here.
# (-L: the descriptor the glob itself used is gone by now.)
for p in /proc/$$/fd/*; do
  fd=${p##*/}
  case $fd in 0|1|2) ;; *) [ -L "$p" ] && eval "exec $fd>&-" ;; esac
done
spec=$1 pidf=$2 rcf=$3
shift 3
"$@" &
child=$!
( while kill -0 "$spec" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1; done
  kill -0 "$spec" 2>/dev/null || kill -9 "$child" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
dog=$!
echo "$child" > "$pidf.tmp" && mv "$pidf.tmp" "$pidf"
wait "$child"
rc=$?
kill "$dog" 2>/dev/null
echo "$rc" > "$rcf.tmp" && mv "$rcf.tmp" "$rcf"
# The spec process is gone (killed by its time limit): nobody else will
# remove the directory.
if ! kill -0 "$spec" 2>/dev/null; then
  case $pidf in /tmp/weft-*/*) rm -rf "${pidf%/*}" ;; esac
fi
]]

local Proc = {}
Proc.__index = Proc

-- Starts argv (a list of words) with stdout and stderr appended to
-- `logfile`; `tag` names its pid and status files in `dir`.
local function spawn(argv, dir, tag, logfile)
  local words = {}
  for i, a in ipairs(argv) do words[i] = sh_quote(a) end
  local p = setmetatable({
    pidfile = dir .. "/" .. tag .. ".pid",
    rcfile = dir .. "/" .. tag .. ".status",
    logfile = logfile,
    what = argv[1],
  }, Proc)
  os.remove(p.pidfile)
  os.remove(p.rcfile)
  local cmd = ("bash -c %s launcher %d %s %s %s < /dev/null >> %s 2>&1 &"):format(
    sh_quote(LAUNCHER), spec_pid, sh_quote(p.pidfile), sh_quote(p.rcfile),
    table.concat(words, " "), sh_quote(logfile))
  assert(os.execute(cmd), "cannot run the launcher for " .. argv[1])
  p.pid = R.wait_until("the pid of " .. argv[1], 10, function()
    local s = read(p.pidfile)
    return s and math.tointeger(tonumber(s))
  end)
  return p
end

-- The exit status (128 + N for signal N), or nil while it runs.
function Proc:status()
  local s = read(self.rcfile)
  return s and math.tointeger(tonumber(s))
end

function Proc:alive()
  if self:status() ~= nil then return false end
  local stat = read("/proc/" .. self.pid .. "/stat")
  return stat ~= nil and stat:match(".*%) (%a)") ~= "Z"
end

local SIGNALS = { KILL = "sigkill", TERM = "sigterm", INT = "sigint",
                  STOP = "sigstop", CONT = "sigcont", HUP = "sighup" }

-- Sends `sig` ("KILL", "TERM", ... or a number) unless it has exited.
function Proc:signal(sig)
  if self:status() ~= nil then return false end
  local s = sig
  if type(sig) == "string" then
    s = SIGNALS[sig:upper():gsub("^SIG", "")] or error("unknown signal " .. sig, 2)
  end
  return uv.kill(self.pid, s) == 0
end

function Proc:wait_exit(seconds)
  return R.wait_until(("%s (pid %d) to exit"):format(self.what, self.pid),
    seconds or 30, function() return self:status() end,
    function() return read(self.logfile) or "" end)
end

-- === the RESP client ======================================================

local function encode(args)
  local parts = { "*" .. #args .. "\r\n" }
  for _, a in ipairs(args) do
    a = tostring(a)
    parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return table.concat(parts)
end

-- Parses one reply at `pos`: returns the position after it and the value,
-- or nothing when `buf` does not hold all of it yet.
local function parse(buf, pos)
  local crlf = buf:find("\r\n", pos, true)
  if not crlf then return nil end
  local kind, line, after = buf:sub(pos, pos), buf:sub(pos + 1, crlf - 1), crlf + 2
  if kind == "+" then return after, line end
  if kind == "-" then return after, { err = line } end
  if kind == ":" then return after, math.tointeger(tonumber(line)) end
  local n = math.tointeger(tonumber(line))
  if kind == "$" then
    if n < 0 then return after, nil end
    if #buf < after + n + 1 then return nil end
    return after + n + 2, buf:sub(after, after + n - 1)
  end
  if kind == "*" then
    if n < 0 then return after, nil end
    local list = {}
    for i = 1, n do
      local nxt, v = parse(buf, after)
      if not nxt then return nil end
      list[i], after = v, nxt
    end
    return after, list
  end
  error("redis client: cannot parse a reply starting with " .. ("%q"):format(buf:sub(pos, pos + 40)))
end

-- Runs the loop until pred() is true (the caller's timer bounds it).
local function pump(pred)
  while not pred() do uv.run("once") end
end

-- Stands for a nil reply while the replies are collected.
R.NIL = setmetatable({}, { __tostring = function() return "redis nil" end })

-- Sends the commands (each a list of words) on one connection to the Unix
-- socket `path` and returns the list of their replies.
local function request(path, commands, seconds)
  local st = { chunks = {}, err = nil, connected = false, eof = false, timed_out = false }
  local pipe = uv.new_pipe(false)
  local timer = uv.new_timer()
  timer:start(math.floor((seconds or 10) * 1000), 0, function() st.timed_out = true end)
  local function finish()
    timer:stop()
    timer:close()
    if not pipe:is_closing() then pipe:close() end
    uv.run("nowait")   -- lets the close callbacks run
  end

  pipe:connect(path, function(err)
    if err then st.err = err else st.connected = true end
  end)
  pump(function() return st.connected or st.err or st.timed_out end)
  if not st.connected then
    finish()
    error(("redis client: cannot connect to %s: %s"):format(path,
      st.err or "timed out"), 3)
  end

  pipe:read_start(function(err, data)
    if err then st.err = err
    elseif data then st.chunks[#st.chunks + 1] = data
    else st.eof = true end
  end)
  local payload = {}
  for i, c in ipairs(commands) do payload[i] = encode(c) end
  pipe:write(table.concat(payload))

  local replies, pos, buf = {}, 1, ""
  while #replies < #commands do
    local nxt, v = parse(buf, pos)
    if nxt then
      replies[#replies + 1], pos = v == nil and R.NIL or v, nxt
    else
      if st.err or st.eof or st.timed_out then
        finish()
        error(("redis client: %s on %s after %d of %d replies"):format(
          st.err or (st.eof and "connection closed") or "timed out", path,
          #replies, #commands), 3)
      end
      local n = #st.chunks
      pump(function() return #st.chunks > n or st.err or st.eof or st.timed_out end)
      buf = buf .. table.concat(st.chunks, "", n + 1)
    end
  end
  finish()
  for i, v in ipairs(replies) do if v == R.NIL then replies[i] = nil end end
  return replies
end

-- === servers ==============================================================

local Server = {}
Server.__index = Server

local REDIS = os.getenv("REDIS_SERVER") or "redis-server"

-- The AUTH command for this server's options, or nil.
local function auth_command(o)
  if o.user then return { "AUTH", o.user, o.pass } end
  if o.password then return { "AUTH", o.password } end
  return nil
end

-- Sends one command and returns its reply (see the header).
function Server:cmd(...)
  local commands = {}
  local auth = auth_command(self.opts)
  if auth then commands[1] = auth end
  commands[#commands + 1] = { ... }
  local replies = request(self.socket, commands)
  if auth and type(replies[1]) == "table" and replies[1].err then
    error("redis client: AUTH failed: " .. replies[1].err, 2)
  end
  return replies[#commands]
end

function Server:log() return read(self.logfile) or "" end

function Server:alive() return self.proc ~= nil and self.proc:alive() end

local function server_argv(s)
  local o = s.opts
  local argv = {
    REDIS, "--dir", s.dir, "--daemonize", "no",
    "--unixsocket", s.socket, "--unixsocketperm", "700",
    "--port", tostring(s.port or 0), "--bind", "127.0.0.1",
    "--save", "", "--appendonly", o.aof and "yes" or "no",
  }
  local function add(...) for _, w in ipairs { ... } do argv[#argv + 1] = w end end
  if o.aof then add("--appendfsync", "always") end
  if o.password then add("--requirepass", o.password) end
  if o.user then
    -- The default user is turned off, so only this user gets in.
    add("--user", o.user, "on", ">" .. o.pass, "~*", "&*", "+@all")
    add("--user", "default", "off")
  end
  for _, w in ipairs(o.args or {}) do add(w) end
  return argv
end

-- Runs redis-server once more in s.dir and waits until it answers PING
-- (with PONG; or with LOADING too when `loading`).  Returns false when it
-- exited first because its TCP port was taken.
local function launch(s, loading)
  s.runs = s.runs + 1
  os.remove(s.socket)
  s.proc = spawn(server_argv(s), s.dir, "redis-" .. s.runs, s.logfile)
  local ok = R.wait_until("redis-server in " .. s.dir .. " to answer PING", 10, function()
    if s.proc:status() then return "exited" end
    local fine, reply = pcall(Server.cmd, s, "PING")
    if loading and fine and type(reply) == "table" and tostring(reply.err):find("^LOADING") then
      return "up"
    end
    return fine and reply == "PONG" and "up"
  end, function() return s:log() end)
  if ok == "up" then return true end
  local log = s:log()
  if s.port and log:find("already in use", 1, true) then return false end
  error(("redis-server in %s exited with status %s:\n%s"):format(
    s.dir, tostring(s.proc:status()), log), 3)
end

-- A loopback TCP port that nothing listens on right now, found by trying
-- ports from a place that depends on this process (specs run in parallel).
local next_port = 20000 + (spec_pid * 7919 + math.floor(uv.hrtime() / 1e6)) % 40000
function R.free_port()
  for _ = 1, 200 do
    next_port = next_port >= 60000 and 20000 or next_port + 1
    local tcp = uv.new_tcp()
    local ok = tcp:bind("127.0.0.1", next_port) and tcp:listen(1, function() end)
    tcp:close()
    uv.run("nowait")
    if ok then return next_port end
  end
  error("no free loopback TCP port found")
end

function R.start(opts)
  opts = opts or {}
  if opts.user and not opts.pass then error("R.start: user needs pass", 2) end
  local dir = mkdtemp("weft-redis")
  local s = setmetatable({
    opts = opts, dir = dir, socket = dir .. "/redis.sock",
    logfile = dir .. "/redis.log", runs = 0,
  }, Server)
  s.url = "unix://" .. s.socket
  servers[#servers + 1] = s
  for _ = 1, 20 do
    if opts.port then s.port = R.free_port() end
    if launch(s) then
      s.pid = s.proc.pid
      if s.port then s.tcp_url = ("redis://127.0.0.1:%d/0"):format(s.port) end
      return s
    end
  end
  error("redis-server: no free TCP port after 20 tries")
end

-- Stops the process (SIGTERM; SIGKILL if it has not exited 10 s later).
local function terminate(s)
  if not s.proc or s.proc:status() then return end
  s.proc:signal("TERM")
  local ok = pcall(s.proc.wait_exit, s.proc, 10)
  if not ok then
    s.proc:signal("KILL")
    s.proc:wait_exit(10)
  end
end

-- kill -9; the directory (and the AOF in it) stays for restart().
function Server:kill()
  self.proc:signal("KILL")
  self.proc:wait_exit(10)
end

-- Starts the server again on the same directory, socket, port and options
-- (stopping it first if it still runs), and waits for PING.
function Server:restart(opts)
  terminate(self)
  if not launch(self, opts and opts.loading) then
    error(("redis-server: port %d was taken while it was down"):format(self.port), 2)
  end
  self.pid = self.proc.pid
end

-- SIGTERM, wait for the exit, remove the directory.  Idempotent.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  terminate(self)
  remove_dir(self.dir)
end

-- === weft workers =========================================================

local Worker = setmetatable({}, { __index = Proc })
Worker.__index = Worker

function R.worker(url, opts)
  opts = opts or {}
  local program = opts.program
  if not program then
    local build = assert(os.getenv("WEFT_BUILD_DIR"),
      "WEFT_BUILD_DIR is not set (run through scripts/test)")
    program = build .. "/weft/weft"
  end
  local argv = { "env" }
  if opts.secret then
    argv[#argv + 1] = "WEFT_SECRET=" .. opts.secret
  else
    argv[#argv + 1] = "-u"
    argv[#argv + 1] = "WEFT_SECRET"
  end
  local names = {}
  for k in pairs(opts.env or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do argv[#argv + 1] = k .. "=" .. opts.env[k] end
  local function add(...) for _, w in ipairs { ... } do argv[#argv + 1] = w end end
  add(program, "worker", url)
  if opts.queue then add("--queue", opts.queue) end
  if opts.workers then add("--workers", tostring(opts.workers)) end
  if opts.threads then add("--threads") end
  if opts.heartbeat then add("--heartbeat", tostring(opts.heartbeat)) end
  if opts.claim_idle then add("--claim-idle", tostring(opts.claim_idle)) end
  if opts.name then add("--name", opts.name) end
  for _, w in ipairs(opts.args or {}) do add(w) end

  local dir = mkdtemp("weft-worker")
  local w = spawn(argv, dir, "worker", dir .. "/worker.log")
  setmetatable(w, Worker)
  w.what = "weft worker " .. (opts.name or url)
  w.dir, w.name, w.url = dir, opts.name, url
  workers[#workers + 1] = w
  if not opts.nowait then w:wait_log(R.READY, opts.ready_timeout or 60) end
  return w
end

function Worker:log() return read(self.logfile) or "" end

-- Waits until a line of the log contains every text of `texts` (plain) and
-- returns that line.  Raises, with the log, when the bound passes or the
-- worker exits without printing it.
function Worker:wait_line(texts, seconds)
  local function find()
    for line in self:log():gmatch("[^\n]+") do
      local all = true
      for _, t in ipairs(texts) do
        if not line:find(t, 1, true) then all = false break end
      end
      if all then return line end
    end
  end
  local what = "a log line with " .. table.concat(texts, " and ")
  local found = R.wait_until(what, seconds or 30, function()
    local exited = self:status() ~= nil
    return find() or (exited and { exited = true })
  end, function() return "log of " .. self.what .. ":\n" .. self:log() end)
  if type(found) == "table" then
    found = find()   -- printed just before it exited?
    if not found then
      error(("%s exited (status %d) without printing %s; its log:\n%s"):format(
        self.what, self:status(), what, self:log()), 2)
    end
  end
  return found
end

function Worker:wait_log(text, seconds) return self:wait_line({ text }, seconds) end

function Worker:kill(sig) return self:signal(sig or "KILL") end

function Worker:term() return self:signal("TERM") end

-- === cleanup ==============================================================

-- The log of every worker started since the last R.cleanup(), each
-- headed by its name, pid and exit status.
function R.logs()
  local parts = {}
  for _, w in ipairs(workers) do
    parts[#parts + 1] = ("--- %s (pid %d%s):\n%s"):format(w.what, w.pid,
      w:status() and ", exited " .. w:status() or "", w:log())
  end
  return table.concat(parts, "\n")
end

-- Kills every worker started here, then stops every server; no process
-- and no directory is left behind.
function R.cleanup()
  local first_err
  local function try(fn, ...)
    local ok, err = pcall(fn, ...)
    if not ok then first_err = first_err or err end
  end
  local ws, ss = workers, servers
  workers, servers = {}, {}
  for _, w in ipairs(ws) do
    try(function()
      w:kill("KILL")
      w:wait_exit(10)
    end)
    remove_dir(w.dir)
  end
  for _, s in ipairs(ss) do try(s.stop, s) end
  if first_err ~= nil then error(first_err, 0) end
end

return R
