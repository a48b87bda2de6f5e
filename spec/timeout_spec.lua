-- weft.timeout.signal / process / call, weft.run_task_with_timeout and
-- weft.sleep: deadlines around a call, which STOP the call.
local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local expect_error = util.expect_error

local function spin() while true do end end

-- Spins until its deadline has long passed, then leaves a trace.
local function spin_then_write(path, seconds)
  local core = require "weft.core"
  local stop_at = core.now() + seconds
  while core.now() < stop_at do end
  local f = io.open(path, "w")
  f:write("not stopped")
  f:close()
end

describe("weft.timeout.signal", function()
  after_each(util.cleanup)

  it("returns every value the function returned", function()
    local r = table.pack(weft.timeout.signal(5, function(a) return a, nil, "c", nil end, "a"))
    assert.equal(4, r.n)
    assert.same({ "a", nil, "c", nil, n = 4 }, r)
  end)

  it("stops a pure-Lua loop at the deadline with kind timeout", function()
    local path = util.tmpname()
    local err = expect_error("timeout", weft.timeout.signal, 0.05, spin_then_write, path, 30)
    assert.truthy(util.mentions(err, "0.05"))
    assert.is_false(util.exists(path))
  end)

  it("cannot be swallowed by pcall inside the function", function()
    local reached = false
    expect_error("timeout", weft.timeout.signal, 0.05, function()
      for _ = 1, 1000 do pcall(spin) end
      reached = true
    end)
    assert.is_false(reached)
  end)

  it("breaks a blocking system call", function()
    local g = gate.new()
    -- opening a FIFO for reading blocks until a writer comes: none does
    expect_error("timeout", weft.timeout.signal, 0.05, function(fifo)
      return io.open(fifo, "r")
    end, g.release_path)
  end)

  it("wakes weft.sleep and waits on futures", function()
    expect_error("timeout", weft.timeout.signal, 0.05, weft.sleep, 60)
    local f = util.future()
    expect_error("timeout", weft.timeout.signal, 0.05, f.result, f)
  end)

  it("gives a function that raises before its deadline its own error", function()
    local ok, err = pcall(weft.timeout.signal, 5, error, { code = 7 })
    assert.is_false(ok)
    assert.same({ code = 7 }, err)
  end)

  it("nests: the inner deadline wins while it is shorter, the outer still fires", function()
    local inner_kind
    local err = expect_error("timeout", weft.timeout.signal, 0.3, function()
      local ok, e = pcall(weft.timeout.signal, 0.05, spin)
      inner_kind = not ok and e.kind
      spin()                                -- the outer deadline ends this
    end)
    assert.equal("timeout", inner_kind)
    assert.truthy(util.mentions(err, "0.3"))
  end)

  it("nests: an outer deadline that comes first stops the inner call too", function()
    local inner_returned = false
    local err = expect_error("timeout", weft.timeout.signal, 0.05, function()
      pcall(weft.timeout.signal, 60, spin)
      inner_returned = true                 -- the stop keeps unwinding
      spin()
    end)
    assert.is_false(inner_returned)
    assert.truthy(util.mentions(err, "0.05"))
  end)

  it("leaves no hook and no alarm handler behind", function()
    expect_error("timeout", weft.timeout.signal, 0.01, spin)
    assert.is_nil(debug.gethook())
    local n = 0
    for _ = 1, 1e5 do n = n + 1 end         -- would raise if a stop hook were left
    assert.equal(1e5, n)
  end)

  it("refuses to run off the main thread with kind invalid_state", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(function()
      local ok, e = pcall(require("weft").timeout.signal, 1, function() end)
      return ok, e.kind
    end)
    assert.same({ false, "invalid_state" }, { f:result() })
  end)
end)

describe("weft.timeout.process", function()
  after_each(util.cleanup)

  it("runs the function in a child process and copies the results back", function()
    local base = 40
    local r = table.pack(weft.timeout.process(10, function(a, b)
      return a + b + base, nil, { nested = { "x" } }
    end, 1, 1))
    assert.equal(3, r.n)
    assert.equal(42, r[1])
    assert.same({ nested = { "x" } }, r[3])
    -- a different process
    assert.are_not.equal(tostring(io.stdout),
                         weft.timeout.process(10, function() return tostring(io.stdout) end))
  end)

  it("kills the child at the deadline: the work ends", function()
    local path = util.tmpname()
    local err = expect_error("timeout", weft.timeout.process, 0.1, spin_then_write, path, 30)
    assert.truthy(util.mentions(err, "killed"))
    assert.is_false(util.exists(path))   -- the child was reaped before the raise
  end)

  it("kills what the child started at the deadline (its process group)", function()
    local pidfile = util.tmpname()
    expect_error("timeout", weft.timeout.process, 2, function(pf)
      os.execute("sleep 300 & echo $! > " .. pf .. ".tmp; mv " .. pf .. ".tmp " .. pf)
      while true do end
    end, pidfile)
    local pid = tonumber(util.read(pidfile))
    assert.is_number(pid, "the child never started its program")
    -- (gone, or a zombie reparented to init: either way not running)
    local give_up = os.time() + 10
    local function running()
      local stat = util.read("/proc/" .. pid .. "/stat")
      return stat ~= nil and stat:match(".*%) (%a)") ~= "Z"
    end
    while running() do
      assert(os.time() < give_up, "the child's program " .. pid .. " outlived it")
      weft.sleep(0.01)
    end
  end)

  it("gives a function that raises its own error", function()
    local ok, err = pcall(weft.timeout.process, 10, function() error({ code = 7 }) end)
    assert.is_false(ok)
    assert.same({ code = 7 }, err)
    ok, err = pcall(weft.timeout.process, 10, function() error("boom") end)
    assert.truthy(tostring(err):find("boom", 1, true))
  end)

  it("reports a child that dies with kind worker_died, naming how", function()
    local err = expect_error("worker_died", weft.timeout.process, 10, function() os.exit(3) end)
    assert.truthy(util.mentions(err, "status 3"))
    err = expect_error("worker_died", weft.timeout.process, 10, function()
      os.execute("kill -SEGV $PPID")
      while true do end
    end)
    assert.truthy(util.mentions(err, "SIGSEGV"))
  end)

  it("refuses what cannot be copied, in the caller, with kind serialization", function()
    local err = expect_error("serialization", weft.timeout.process, 10, function() end, io.stdout)
    assert.truthy(util.mentions(err, "argument 1"))
    err = expect_error("serialization", weft.timeout.process, 10, function() return io.stdout end)
    assert.truthy(util.mentions(err, "userdata"))
  end)

  it("can require modules on package.path in the child", function()
    assert.equal(weft.version, weft.timeout.process(10, function()
      return require("weft").version
    end))
  end)
end)

describe("weft.timeout.call", function()
  after_each(util.cleanup)

  it("uses the signal on the main thread", function()
    assert.equal("signal", weft.timeout.mechanism())
    expect_error("timeout", weft.timeout.call, 0.05, spin)
    assert.equal(5, weft.timeout.call(1, function(x) return x end, 5))
  end)

  it("works inside a pool worker, stopping only the call", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(function()
      local w = require "weft"
      local ok, e = pcall(w.timeout.call, 0.05, function() while true do end end)
      return w.timeout.mechanism(), ok, e.kind, "the task goes on"
    end)
    assert.same({ "thread", false, "timeout", "the task goes on" }, { f:result() })
  end)

  it("nests inside a task timeout: the task's deadline still stops the task", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(weft.task { function()
      local w = require "weft"
      pcall(w.timeout.call, 60, function() while true do end end)
      return "escaped"
    end, timeout = 0.05 })
    expect_error("timeout", f.result, f)
  end)
end)

describe("weft.run_task_with_timeout", function()
  after_each(util.cleanup)

  local function recorder()
    local lines = {}
    local logger = {}
    for _, level in ipairs { "info", "warn", "error" } do
      logger[level] = function(self, msg)
        assert.equal(logger, self)
        lines[#lines + 1] = level .. ": " .. msg
      end
    end
    return logger, lines
  end

  it("runs the task under its own timeout and returns its values", function()
    local logger, lines = recorder()
    local task = weft.task { function(a, b) return a + b, "ok" end, name = "add", timeout = 5 }
    assert.same({ 5, "ok" }, { weft.run_task_with_timeout(task, { 2, 3 }, logger) })
    assert.truthy(lines[1]:find("^info: Task 'add': starting"))
    assert.truthy(lines[#lines]:find("^info: Task 'add': finished"))
  end)

  it("stops a task at its timeout and logs a warning", function()
    local logger, lines = recorder()
    local task = weft.task { spin, name = "spinner", timeout = 0.05 }
    expect_error("timeout", weft.run_task_with_timeout, task, {}, logger)
    assert.truthy(lines[#lines]:find("^warn: Task 'spinner': timed out"))
  end)

  it("logs a failure as an error and raises the task's own error", function()
    local logger, lines = recorder()
    local task = weft.task { function() error("bad row") end, name = "load", timeout = 5 }
    local ok, err = pcall(weft.run_task_with_timeout, task, {}, logger)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("bad row", 1, true))
    assert.truthy(lines[#lines]:find("^error: Task 'load': failed: .*bad row"))
  end)

  it("logs through weft's own logger by default", function()
    local out = util.run_lua([[
      local weft = require "weft"
      local t = weft.task { function() while true do end end, name = "slow", timeout = 0.05 }
      print(pcall(weft.run_task_with_timeout, t, {}))
    ]])
    assert.truthy(out:find("INFO  Task 'slow': starting", 1, true))
    assert.truthy(out:find("WARN  Task 'slow': timed out", 1, true))
  end)

  it("rejects a bad task, args or logger with kind config", function()
    local task = weft.task { function() end, timeout = 1 }
    expect_error("config", weft.run_task_with_timeout, 42, {})
    expect_error("config", weft.run_task_with_timeout, task, "args")
    expect_error("config", weft.run_task_with_timeout, task, {}, { info = print })
  end)
end)

describe("weft.sleep", function()
  it("sleeps for fractional seconds", function()
    local core = require "weft.core"
    local t = core.now()
    weft.sleep(0.01)
    assert.is_true(core.now() - t >= 0.01)
  end)
end)

describe("bad timeouts", function()
  local bad = { -1, 0 / 0, "1", true, {} }

  it("raise kind config in every weft.timeout function and weft.sleep", function()
    for _, s in ipairs(bad) do
      expect_error("config", weft.timeout.signal, s, spin)
      expect_error("config", weft.timeout.process, s, spin)
      expect_error("config", weft.timeout.call, s, spin)
      expect_error("config", weft.sleep, s)
    end
    expect_error("config", weft.timeout.signal, 1)
    expect_error("config", weft.timeout.call, 1, "not callable")
    expect_error("config", weft.timeout.process, 1, 42)
  end)

  it("raise kind config in result, wait, as_completed and map", function()
    local f = util.future()
    for _, s in ipairs(bad) do
      expect_error("config", f.result, f, s)
      expect_error("config", weft.wait, { f }, { timeout = s })
      expect_error("config", weft.as_completed, { f }, s)
    end
  end)
end)
