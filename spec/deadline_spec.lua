-- Deadlines in the pools: per-task timeouts that stop the work, forced
-- cancel, retries, stuck C calls, and what the pool does afterwards.
--
-- "The task really stopped" is proved without sleeping: a one-worker pool
-- runs the next task only after the stopped one has unwound (and the state
-- was rebuilt), so when that next task sees no trace of a side effect the
-- stopped task would have made after its deadline, the side effect never
-- happened.  If the stop did not work, the next task would run only after
-- the stopped one finished its work, and would see the trace.
local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local expect_error = util.expect_error

-- A task that spins well past its deadline, then leaves a trace.  (It reads
-- the clock only to end on its own if it is never stopped.)
local function spin_then_write(path, seconds)
  local core = require "weft.core"
  local stop_at = core.now() + seconds
  while core.now() < stop_at do end
  local f = io.open(path, "w")
  f:write("the task was not stopped")
  f:close()
  return "finished"
end

local function exists_in_worker(ex, path)
  return ex:submit(function(p)
    local f = io.open(p)
    if f then f:close() end
    return f ~= nil
  end, path):result()
end

describe("task timeouts", function()
  after_each(util.cleanup)

  it("stop a pure-Lua loop: the future fails with kind timeout, the work ends", function()
    local ex = util.threads { workers = 1 }
    local path = util.tmpname()
    local task = weft.task { spin_then_write, name = "spinner", timeout = 0.05 }
    local f = ex:submit(task, path, 30)
    local err = expect_error("timeout", f.result, f)
    assert.equal("spinner", err.task)
    assert.truthy(util.mentions(err, "0.05"))
    assert.equal("failed", f:state())
    assert.is_false(exists_in_worker(ex, path))
    assert.is_false(util.exists(path))
  end)

  it("cannot be swallowed by pcall inside the task", function()
    local ex = util.threads { workers = 1 }
    local path = util.tmpname()
    local task = weft.task { function(p, spin)
      for _ = 1, 1000 do
        pcall(spin, p, 30)                    -- the stop is caught here...
        pcall(error, "and again")
      end
      local f = io.open(p, "w")               -- ...but never gets this far
      f:write("escaped")
      f:close()
    end, timeout = 0.05 }
    local f = ex:submit(task, path, spin_then_write)
    expect_error("timeout", f.result, f)
    assert.is_false(exists_in_worker(ex, path))
  end)

  it("stop loops inside coroutines (wrap and resume)", function()
    local ex = util.threads { workers = 1 }
    local wrap = weft.task { function()
      coroutine.wrap(function() while true do end end)()
    end, timeout = 0.05 }
    local resume = weft.task { function()
      return coroutine.resume(coroutine.create(function() while true do end end))
    end, timeout = 0.05 }
    local a = ex:submit(wrap)
    expect_error("timeout", a.result, a)
    local b = ex:submit(resume)
    expect_error("timeout", b.result, b)
    assert.equal("still serving", ex:submit(function() return "still serving" end):result())
  end)

  it("rebuild the worker's state, running init again, before the next task", function()
    local ex = util.threads { workers = 1, init = function(tag)
      STATE = { tag = tag, inits = (STATE and STATE.inits or 0) + 1 }
    end, init_args = { "fresh" } }
    local dirty = weft.task { function()
      STATE.tag = "dirty"
      LEFTOVER = true
      while true do end
    end, timeout = 0.05 }
    local f = ex:submit(dirty)
    expect_error("timeout", f.result, f)
    local tag, leftover = ex:submit(function() return STATE.tag, LEFTOVER end):result()
    assert.equal("fresh", tag)
    assert.is_nil(leftover)
  end)

  it("leave a task that raises before its deadline with its own error", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(weft.task { function() error("own error") end, timeout = 10 })
    local err = expect_error("task", f.result, f)
    assert.truthy(util.mentions(err, "own error"))
  end)

  it("let a task that finishes in time keep its results", function()
    local ex = util.threads { workers = 2, timeout = 30 }
    local f = ex:submit(function(a) return a, nil, "c" end, "a")
    assert.equal(3, select("#", f:result()))
    assert.same({ "a", nil, "c" }, { f:result() })
  end)

  it("come from the executor's timeout= unless the task has its own", function()
    local ex = util.threads { workers = 1, timeout = 0.05 }
    local f = ex:submit(function() while true do end end)
    expect_error("timeout", f.result, f)
    -- the task's own, longer timeout wins over the executor's
    local g = gate.new()
    local long = weft.task { function(hold, spin_for)
      local core = require "weft.core"
      local t = core.now() + spin_for
      while core.now() < t do end       -- well past the executor's 0.05 s
      return hold()
    end, timeout = 60 }
    local h = ex:submit(long, g.hold, 0.2)
    g:wait_started()
    g:release()
    assert.equal("go", h:result())
  end)

  it("wake a task sleeping in weft.sleep", function()
    local ex = util.threads { workers = 1 }
    local path = util.tmpname()
    local f = ex:submit(weft.task { function(p)
      require("weft").sleep(60)
      io.open(p, "w"):close()
    end, timeout = 0.05 }, path)
    expect_error("timeout", f.result, f)
    assert.is_false(exists_in_worker(ex, path))
  end)

  it("are counted in stats: failed and timed_out", function()
    local ex = util.threads { workers = 1, timeout = 0.05 }
    local f = ex:submit(function() while true do end end)
    expect_error("timeout", f.result, f)
    assert.equal(1, ex:submit(function() return 1 end):result())
    local s = ex:stats()
    assert.equal(1, s.timed_out)
    assert.equal(1, s.failed)
    assert.equal(1, s.completed)
    assert.equal(0.05, s.timeout)
  end)

  it("work on the inline executor too", function()
    local ex = util.track(weft.inline { timeout = 0.05 })
    local f = ex:submit(function() while true do end end)
    expect_error("timeout", f.result, f)
    assert.equal("next", ex:submit(function() return "next" end):result())
  end)

  it("apply per item in map: a late item raises at its position", function()
    local ex = util.threads { workers = 2 }
    local task = weft.task { function(x)
      if x == 3 then while true do end end
      return x * 10
    end, timeout = 0.1 }
    local seen = {}
    local ok, err = pcall(function()
      for i, v in ex:map(task, { 1, 2, 3, 4 }) do seen[i] = v end
    end)
    assert.is_false(ok)
    assert.is_true(weft.is(err, "timeout"))
    assert.same({ 10, 20 }, seen)
  end)
end)

describe("a task stuck in a blocking C call", function()
  after_each(util.cleanup)

  it("fails at its deadline, and a new worker takes its place", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    -- system() retries its wait when a signal interrupts it: the stop
    -- cannot reach Lua code until the shell returns, i.e. until the gate
    -- opens.
    local stuck = weft.task { function(arrive, fifo)
      arrive()
      os.execute(": < '" .. fifo .. "'")
      return "returned"
    end, timeout = 0.05 }
    local f = ex:submit(stuck, g.arrive, g.release_path)
    g:wait_started()
    expect_error("timeout", f.result, f)
    -- the only worker is still blocked, yet the pool serves
    assert.equal("served", ex:submit(function() return "served" end):result())
    assert.equal(1, ex:stats().workers)
    g:release()                         -- the stuck thread returns and retires
    assert.equal("served again", ex:submit(function() return "served again" end):result())
  end)
end)

describe("cancel{force = true}", function()
  after_each(util.cleanup)

  it("stops a running thread task: the future ends cancelled, the work ends", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local path = util.tmpname()
    local f = ex:submit(function(arrive, p, spin)
      arrive()
      return spin(p, 30)
    end, g.arrive, path, spin_then_write)
    g:wait_started()
    assert.is_false(f:cancel())                 -- without force: running, so no
    assert.is_true(f:cancel { force = true })
    assert.equal("cancelled", f:state())
    assert.is_true(f:cancelled())
    expect_error("cancelled", f.result, f)
    assert.is_false(exists_in_worker(ex, path))
    assert.equal(1, ex:stats().cancelled)
  end)

  it("returns false for a finished future and true for a pending one", function()
    local ex = util.threads { workers = 1 }
    local done = ex:submit(function() return 1 end)
    done:result()
    assert.is_false(done:cancel { force = true })
    local g = gate.new()
    local busy = ex:submit(function(hold) return hold() end, g.hold)
    local queued = ex:submit(function() return "never" end)
    g:wait_started()
    assert.is_true(queued:cancel { force = true })
    assert.equal("cancelled", queued:state())
    g:release()
    assert.equal("go", busy:result())
  end)

  it("stops a task waiting between retries", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(weft.task { function() error("flaky") end,
                                    retries = 3, retry_delay = 60 })
    -- wait for the first attempt to fail: then the task waits 60 s
    while f:attempts() < 1 or ex:stats().busy > 0 do weft.sleep(0.001) end
    assert.is_true(f:cancel { force = true })
    expect_error("cancelled", f.result, f)
    assert.equal(1, f:attempts())
  end)

  it("rejects a bad option table", function()
    local f = util.future()
    expect_error("config", f.cancel, f, "force")
  end)
end)

describe("retries", function()
  after_each(util.cleanup)

  it("re-run a failed task; the error is the last one, with the attempt count", function()
    local ex = util.threads { workers = 2 }
    local path = util.tmpname()
    local f = ex:submit(weft.task { function(p)
      local file = io.open(p, "a")
      file:write("x")
      file:close()
      local n = #io.open(p):read("a")
      error("attempt " .. n)
    end, retries = 2, retry_delay = 0 }, path)
    local err = expect_error("task", f.result, f)
    assert.truthy(util.mentions(err, "attempt 3"))
    assert.equal(3, err.attempts)
    assert.equal(3, f:attempts())
    assert.equal("xxx", io.open(path):read("a"))
  end)

  it("retry a timed-out attempt, and a later success wins", function()
    local ex = util.threads { workers = 1 }
    local path = util.tmpname()
    local f = ex:submit(weft.task { function(p)
      local file = io.open(p, "a")
      file:write("x")
      file:close()
      if #io.open(p):read("a") < 3 then while true do end end
      return "third time lucky"
    end, timeout = 0.05, retries = 5, retry_delay = { 0, 0.01 } }, path)
    assert.equal("third time lucky", f:result())
    assert.equal(3, f:attempts())
  end)

  it("give up after the last timed-out attempt with kind timeout", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(weft.task { function() while true do end end,
                                    timeout = 0.02, retries = 1 })
    local err = expect_error("timeout", f.result, f)
    assert.equal(2, err.attempts)
    assert.equal(1, ex:stats().timed_out)
  end)

  it("keep the future running between attempts", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(weft.task { function() error("no") end, retries = 1, retry_delay = 60 })
    while f:attempts() < 1 or ex:stats().busy > 0 do weft.sleep(0.001) end
    assert.equal("running", f:state())
    assert.is_false(f:cancel())
    f:cancel { force = true }
  end)

  it("let shutdown{wait = true} wait for a pending retry", function()
    local ex = util.threads { workers = 1 }
    local path = util.tmpname()
    local f = ex:submit(weft.task { function(p)
      local file = io.open(p, "a")
      file:write("x")
      file:close()
      if #io.open(p):read("a") < 2 then error("first") end
      return "second"
    end, retries = 1, retry_delay = 0.05 }, path)
    ex:shutdown { wait = true }
    assert.is_true(f:done())
    assert.equal("second", f:result())
  end)
end)

describe("bad deadline options", function()
  after_each(util.cleanup)

  local bad = { -1, 0 / 0, "1", true, {} }

  it("raise kind config in weft.threads and weft.inline", function()
    for _, t in ipairs(bad) do
      expect_error("config", weft.threads, { workers = 1, timeout = t })
      expect_error("config", weft.inline, { timeout = t })
    end
  end)

  it("raise kind config in weft.task", function()
    local fn = function() end
    for _, t in ipairs(bad) do
      expect_error("config", weft.task, { fn, timeout = t })
      if type(t) ~= "table" then   -- (a table is a list of per-attempt delays)
        expect_error("config", weft.task, { fn, retry_delay = t })
      end
      expect_error("config", weft.task, { fn, retry_delay = { 0, t } })
    end
    for _, r in ipairs { -1, 1.5, "2", 0 / 0 } do
      expect_error("config", weft.task, { fn, retries = r })
    end
    expect_error("config", weft.task, { "not a function" })
    expect_error("config", weft.task, { fn, name = 3 })
    expect_error("config", weft.task, { fn, colour = "red" })
  end)

  it("raise kind config for a task that is not a function or weft.task", function()
    local ex = util.threads { workers = 1 }
    expect_error("config", ex.submit, ex, { fn = function() end })
    expect_error("config", ex.map, ex, { fn = function() end }, { 1 })
  end)
end)

describe("weft.task", function()
  after_each(util.cleanup)

  it("is callable: outside a flow it calls its function", function()
    local t = weft.task { function(a, b) return a + b, "x" end, name = "add" }
    assert.same({ 3, "x" }, { t(1, 2) })
    assert.equal("add", t.name)
    assert.truthy(tostring(t):find("add", 1, true))
  end)

  it("names the task in errors (a default name says where it was defined)", function()
    local ex = util.threads { workers = 1 }
    local named = ex:submit(weft.task { function() error("x") end, name = "loader" })
    assert.equal("loader", expect_error("task", named.result, named).task)
    local anon = weft.task(function() error("y") end)
    assert.truthy(anon.name:find("deadline_spec.lua:", 1, true))
  end)
end)
