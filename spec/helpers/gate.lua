-- helpers/gate.lua -- hold a task inside a worker until the test lets it go,
-- without sleeping and without sharing anything but two FIFO paths.
--
--   local gate = require "helpers.gate"
--   local g = gate.new()
--   local f = ex:submit(function(hold) hold(); return "done" end, g.hold)
--   g:wait_started()   -- returns once the task has called hold()
--   ...                -- the task is RUNNING and blocked here
--   g:release()        -- lets one holder return
--
-- How it works.  Each gate is a temporary directory with two FIFOs:
--   started  the task writes one line "started\n" when it calls hold();
--   release  the task blocks reading one byte from it.
-- The test process keeps both FIFOs open read-write for the whole run.  On
-- Linux an O_RDWR open of a FIFO never blocks, and while the test holds it:
--   * a task's open for reading or writing never blocks (a peer exists);
--   * a byte written by release() stays in the pipe until a holder reads it,
--     so releasing before the task reached the gate is fine;
--   * nobody ever writes to a FIFO without a reader, so no SIGPIPE.
-- The test's handles are never closed (they are kept in `keep` until the
-- process exits): closing them while a worker is between open() and write()
-- would raise SIGPIPE in the worker thread and kill the whole process.
--
-- `g.hold`, `g.arrive` and `g.open` are plain Lua functions whose only
-- upvalues are the two path strings, so they can be passed to (or captured
-- by) a task: they are copied to the worker, where `io` is the worker's own
-- io library.
-- A release is ONE byte and a holder reads exactly one byte, unbuffered:
-- a one-byte read is atomic, so several tasks (on several threads) can
-- share one gate and release(n) lets exactly n of them go.
--
-- close() (also __close, and gate.close_all() for an after_each) writes
-- plenty of release bytes and unlinks both FIFOs: a task already past
-- open() reads one; a task that gets to hold() later finds no FIFO and
-- returns at once.  So cleanup never leaves a worker blocked.

local gate = {}

local keep = {}   -- every handle the test opened, alive until exit
local live = {}   -- gates not closed yet, for close_all()

local Gate = {}
Gate.__index = Gate

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function must(ok, what)
  if not ok then error("gate helper: " .. what, 3) end
  return ok
end

-- Runs a shell command with its output sent to a file and returns that
-- output.  Never io.popen here: Lua's io.popen calls fflush(NULL), which
-- takes the lock of every open FILE, and a task blocked in hold() keeps its
-- FILE locked while it waits: the test would deadlock with its own task.
-- os.execute (system(3)) flushes nothing.
local function capture(cmd)
  local out = os.tmpname()
  local ok = os.execute(cmd .. " > " .. sh_quote(out))
  local f = io.open(out, "rb")
  local text = f and f:read("a") or ""
  if f then f:close() end
  os.remove(out)
  return text, ok
end

-- Creates a new gate.
function gate.new()
  local dir = must(capture("mktemp -d /tmp/weft-gate.XXXXXX"), "mktemp failed")
  dir = must(dir:match("^(%S+)"), "mktemp printed nothing")
  local started, release = dir .. "/started", dir .. "/release"
  must(os.execute("mkfifo " .. sh_quote(started) .. " " .. sh_quote(release)),
       "mkfifo failed")
  local started_fh = must(io.open(started, "r+"), "cannot open " .. started)
  local release_fh = must(io.open(release, "r+"), "cannot open " .. release)
  release_fh:setvbuf("no")
  keep[#keep + 1] = started_fh
  keep[#keep + 1] = release_fh

  local g = setmetatable({
    dir = dir,
    started_path = started,
    release_path = release,
    release_fh = release_fh,
    closed = false,
  }, Gate)

  -- Runs inside a task: announce, then block until released.  Returns "go",
  -- or nil when the gate was torn down before the task got to it.
  g.hold = function()
    local w = io.open(started, "w")
    if w then
      w:write("started\n")
      w:close()
    end
    local r = io.open(release, "r")
    if not r then return nil end
    r:setvbuf("no")
    local token = r:read(1)
    r:close()
    return token and "go" or nil
  end

  -- Runs inside a task: announces it like hold() but does not block (for a
  -- task that then keeps running on its own, e.g. a busy loop).
  g.arrive = function()
    local w = io.open(started, "w")
    if w then
      w:write("started\n")
      w:close()
    end
  end

  -- Runs inside a task: releases one holder of this gate (lets tasks
  -- release each other without the test in between).
  g.open = function()
    local w = io.open(release, "w")
    if w then
      w:write("g")
      w:close()
    end
  end

  live[g] = true
  return g
end

-- Blocks until `n` (default 1) more holders have reached the gate.  Raises
-- (instead of hanging forever) if they do not show up within two minutes:
-- that is a broken runtime, never a timing assumption of a passing run.
function Gate:wait_started(n)
  n = n or 1
  local want = #"started\n" * n
  local cmd = "timeout 120 dd if=" .. sh_quote(self.started_path) ..
              " bs=1 count=" .. want .. " status=none"
  local got = capture(cmd)
  if #got ~= want then
    error(("gate: expected %d task(s) to reach the gate, saw %d"):format(
      n, #got // #"started\n"), 2)
  end
end

-- Lets `n` (default 1) holders go.
function Gate:release(n)
  if self.closed then return end
  self.release_fh:write(string.rep("g", n or 1))
end

function Gate:close()
  if self.closed then return end
  self:release(64)
  self.closed = true
  live[self] = nil
  os.remove(self.started_path)
  os.remove(self.release_path)
  os.remove(self.dir)
end
Gate.__close = Gate.close

-- Closes every gate still open (for after_each).
function gate.close_all()
  for g in pairs(live) do g:close() end
end

return gate
