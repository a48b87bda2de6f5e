-- Deadlines with more busy threads than cores: the deadline service runs
-- at real-time priority when the process may use it, and a deadline that
-- passes makes the pool's other busy workers yield their CPU once, so the
-- stopped worker and the waiting owner are not left waiting for a
-- scheduler tick. How late deadlines are is measured by
-- scripts/bench/lateness_thread*.lua, not here; these check the mechanisms.
local weft = require "weft"
local core = require "weft.core"
local gate = require "helpers.gate"
local util = require "helpers.util"

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The scheduling policies (field 41 of /proc/.../stat) of this process's
-- threads named `name`, in a list.
local function policies_of(name)
  local pid = util.self_pid()
  local ls = assert(io.popen("ls /proc/" .. pid .. "/task"))
  local tids = ls:read("a")
  ls:close()
  local found = {}
  for tid in tids:gmatch("%d+") do
    local comm = read(("/proc/%d/task/%s/comm"):format(pid, tid))
    local stat = read(("/proc/%d/task/%s/stat"):format(pid, tid))
    if comm and stat and comm:gsub("%s+$", "") == name then
      local fields = {}
      for field in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = field end
      found[#found + 1] = tonumber(fields[41 - 2])   -- (fields 1 and 2 come before ")")
    end
  end
  return found
end

local function is_root()
  local p = assert(io.popen("id -u"))
  local uid = p:read("l")
  p:close()
  return uid == "0"
end

describe("deadlines with more busy threads than cores", function()
  after_each(util.cleanup)

  it("the deadline service runs at real-time priority (SCHED_FIFO) when allowed", function()
    if not is_root() then
      pending("needs root (or CAP_SYS_NICE) for SCHED_FIFO")
      return
    end
    local ex = util.threads { workers = 1 }
    local f = ex:submit(weft.task{ function() return 1 end, timeout = 5 })
    assert.equal(1, f:result())   -- (the service starts with the first deadline)
    assert.same({ 1 }, policies_of("weft:deadline"))   -- SCHED_FIFO
  end)

  it("threads started by the deadline service are not real-time", function()
    -- A task stuck in C past its deadline gets its worker replaced, by the
    -- deadline service: the new worker must be an ordinary thread.
    local ex = util.threads { workers = 1, name = "rt" }
    local g = gate.new()
    -- os.execute waits for its child whatever signal comes (glibc retries),
    -- and the child waits for the gate
    local f = ex:submit(weft.task{ function(arrive, path)
      arrive()
      os.execute("cat " .. path .. " > /dev/null")
    end, timeout = 0.05 }, g.arrive, g.release_path)
    g:wait_started()
    assert.is_true(weft.is(util.catch(f.result, f), "timeout"))
    -- the replacement runs the next task
    assert.equal(2, ex:submit(function() return 2 end):result())
    -- the stuck worker and its replacement: both SCHED_OTHER
    assert.same({ 0, 0 }, policies_of("weft:rt:1"))
    g:release()
  end)

  it("a deadline that passes makes the other spinning workers yield once", function()
    local ex = util.threads { workers = 2 }
    local g = gate.new()
    local spinner = ex:submit(weft.task{ function(arrive)
      arrive()
      while true do end
    end, timeout = 600 }, g.arrive)
    finally(function() spinner:cancel{ force = true } end)   -- (even if a check fails)
    g:wait_started()   -- it spins: it holds or waits for a CPU
    local before = core._nudges()
    local f = ex:submit(weft.task{ function() while true do end end, timeout = 0.05 })
    assert.is_true(weft.is(util.catch(f.result, f), "timeout"))
    assert.is_true(core._nudges() > before)
    -- the nudged task went on: it is still running, and stops when told to
    assert.is_true(spinner:running())
    spinner:cancel{ force = true }
    assert.is_true(weft.is(util.catch(spinner.result, spinner), "cancelled"))
  end)

  it("a worker asleep in a system call is not nudged (its call is not interrupted)", function()
    local ex = util.threads { workers = 2 }
    local g = gate.new()
    local held = ex:submit(function(hold) hold(); return "went on" end, g.hold)
    g:wait_started()   -- blocked in open() on a FIFO
    local before = core._nudges()
    local f = ex:submit(weft.task{ function() while true do end end, timeout = 0.05 })
    assert.is_true(weft.is(util.catch(f.result, f), "timeout"))
    assert.equal(before, core._nudges())
    g:release()
    assert.equal("went on", held:result())
  end)
end)
