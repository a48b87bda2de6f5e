-- helpers/gate.lua -- hold a task inside a worker until the test lets it go,
-- without sleeping and without sharing anything but two FIFO paths.
--
--   local gate = require "helpers.gate"
--   local g = gate.new()
--   local f = ex:submit(function(hold) hold(); return "done" end, g.hold)
--   g:wait_started()   -- returns once the task has called hold()
--   ...                -- the task is RUNNING and blocked here
--   g:release()        -- opens the gate: every holder, now or later, goes on
--
-- How it works.  Each gate is a temporary directory with two FIFOs.
--
--   started  The test keeps it open read-write for the whole run, so a
--            holder's open() for writing never blocks; the holder writes one
--            line "started\n" into it.  wait_started(n) reads n such lines.
--   release  A holder opens it for reading, and on Linux that open() blocks
--            until somebody opens the FIFO for writing.  release() opens it
--            read-write (which never blocks) and keeps it open, so the gate
--            is a latch: holders blocked in open() return, and later holders
--            pass straight through.
--
-- A holder blocks in open(), never in a read on an open FILE: glibc's
-- fflush(NULL) (which io.popen calls) locks every open FILE, so a FILE held
-- by a thread blocked in read() would deadlock io.popen in the test.
--
-- The handles the test opens are never closed (kept in `keep` until the
-- process exits): closing the `started` one while a worker is between its
-- open() and write() would raise SIGPIPE and kill the whole process.
--
-- `g.hold`, `g.arrive` and `g.open` are plain Lua functions whose only
-- upvalues are the two path strings, so they can be passed to (or captured
-- by) a task: they are copied to the worker, where `io` is the worker's own
-- io library.
--
-- close() (also __close, and gate.close_all() for an after_each) opens the
-- gate and unlinks both FIFOs: a holder already in open() returns; a task
-- that gets to hold() later finds no FIFO and returns at once.  So cleanup
-- never leaves a worker blocked.

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

-- Creates a new, closed gate.
function gate.new()
  local p = must(io.popen("mktemp -d /tmp/weft-gate.XXXXXX"), "mktemp failed")
  local dir = must(p:read("l"), "mktemp printed nothing")
  p:close()
  local started, release = dir .. "/started", dir .. "/release"
  must(os.execute("mkfifo " .. sh_quote(started) .. " " .. sh_quote(release)),
       "mkfifo failed")
  keep[#keep + 1] = must(io.open(started, "r+"), "cannot open " .. started)

  local g = setmetatable({
    dir = dir,
    started_path = started,
    release_path = release,
    opened = false,
    closed = false,
  }, Gate)

  -- Runs inside a task: announce, then block until the gate is open.
  -- Returns "go", or nil when the gate was torn down before the task got
  -- to it.
  g.hold = function()
    local w = io.open(started, "w")
    if w then
      w:write("started\n")
      w:close()
    end
    local r = io.open(release, "r")   -- blocks here until the gate opens
    if not r then return nil end
    r:close()
    return "go"
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

  -- Runs inside a task: opens the gate (lets tasks release each other
  -- without the test in between).  The handle is kept in a worker global
  -- so the gate stays open until the pool shuts down.
  g.open = function()
    local w = io.open(release, "r+")
    if w then
      WEFT_SPEC_OPEN_GATES = WEFT_SPEC_OPEN_GATES or {}
      WEFT_SPEC_OPEN_GATES[#WEFT_SPEC_OPEN_GATES + 1] = w
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

-- Opens the gate: every holder, blocked now or arriving later, goes on.
-- Opening an open gate does nothing.
function Gate:release()
  if self.opened or self.closed then return end
  self.opened = true
  keep[#keep + 1] = must(io.open(self.release_path, "r+"),
                         "cannot open " .. self.release_path)
end

function Gate:close()
  if self.closed then return end
  self:release()
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
