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
--   release  the task blocks reading one line from it.
-- The test process keeps both FIFOs open read-write for the whole run.  On
-- Linux an O_RDWR open of a FIFO never blocks, and while the test holds it:
--   * a task's open for reading or writing never blocks (a peer exists);
--   * a line written by release() stays in the pipe until a holder reads it,
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
-- A holder reads its line unbuffered, one byte at a time, so several tasks
-- can share one gate: release(n) lets exactly n of them go.
--
-- close() (also __close, and gate.close_all() for an after_each) writes
-- plenty of release lines and unlinks both FIFOs: a task already past
-- open() reads a line; a task that gets to hold() later finds no FIFO and
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

-- Creates a new gate.
function gate.new()
  local p = must(io.popen("mktemp -d /tmp/weft-gate.XXXXXX"), "mktemp failed")
  local dir = must(p:read("l"), "mktemp printed nothing")
  p:close()
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

  -- Runs inside a task: announce, then block until released.  Returns the
  -- line it was released with ("go"), or nil when the gate was torn down.
  g.hold = function()
    local w = io.open(started, "w")
    if w then
      w:write("started\n")
      w:close()
    end
    local r = io.open(release, "r")
    if not r then return nil end
    r:setvbuf("no")
    local line = r:read("l")
    r:close()
    return line
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
      w:write("go\n")
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
  local p = must(io.popen(cmd), "cannot run dd")
  local got = p:read("a")
  p:close()
  if #got ~= want then
    error(("gate: expected %d task(s) to reach the gate, saw %d"):format(
      n, #got // #"started\n"), 2)
  end
end

-- Lets `n` (default 1) holders go.
function Gate:release(n)
  if self.closed then return end
  self.release_fh:write(string.rep("go\n", n or 1))
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
