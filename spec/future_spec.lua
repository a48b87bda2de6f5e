-- Futures: states, result/exception, cancel, done-callbacks, weft.future().
local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local expect_error = util.expect_error

-- The value a failed bare future carries: the error as set, or the `value`
-- of the weft "task" error wrapping it.
local function payload(err)
  if weft.is(err, "task") then return err.value end
  return err
end

-- Writes a marker file: proof that a task ran.
local function touch(path)
  local f = assert(io.open(path, "w"))
  f:write("ran")
  f:close()
end

describe("weft.future()", function()
  after_each(util.cleanup)

  describe("a new future", function()
    it("is pending and neither done, running nor cancelled", function()
      local f = weft.future()
      assert.equal("pending", f:state())
      assert.is_false(f:done())
      assert.is_false(f:running())
      assert.is_false(f:cancelled())
    end)

    it("raises kind timeout from result(timeout) and stays pending", function()
      local f = weft.future()
      local err = expect_error("timeout", f.result, f, 0.05)
      assert.is_string(err.message)
      assert.equal("pending", f:state())
    end)

    it("raises kind timeout from exception(timeout)", function()
      local f = weft.future()
      expect_error("timeout", f.exception, f, 0.05)
      assert.is_false(f:done())
    end)
  end)

  describe("set_running_or_notify_cancel", function()
    it("moves a pending future to running and returns true", function()
      local f = weft.future()
      assert.is_true(f:set_running_or_notify_cancel())
      assert.equal("running", f:state())
      assert.is_true(f:running())
      assert.is_false(f:done())
    end)

    it("returns false for a cancelled future", function()
      local f = weft.future()
      assert.is_true(f:cancel())
      assert.is_false(f:set_running_or_notify_cancel())
      assert.equal("cancelled", f:state())
    end)

    it("raises kind invalid_state for a running future", function()
      local f = weft.future()
      f:set_running_or_notify_cancel()
      expect_error("invalid_state", f.set_running_or_notify_cancel, f)
      assert.equal("running", f:state())
    end)

    it("raises kind invalid_state for a finished future", function()
      local f = weft.future()
      f:set_result(1)
      expect_error("invalid_state", f.set_running_or_notify_cancel, f)
      assert.equal("finished", f:state())
    end)

    it("raises kind invalid_state for a failed future", function()
      local f = weft.future()
      f:set_exception("boom")
      expect_error("invalid_state", f.set_running_or_notify_cancel, f)
      assert.equal("failed", f:state())
    end)
  end)

  describe("set_result", function()
    it("finishes a running future with its value", function()
      local f = weft.future()
      f:set_running_or_notify_cancel()
      f:set_result(42)
      assert.equal("finished", f:state())
      assert.is_true(f:done())
      assert.is_false(f:running())
      assert.equal(42, f:result())
    end)

    it("finishes a pending future directly", function()
      local f = weft.future()
      f:set_result("direct")
      assert.equal("finished", f:state())
      assert.equal("direct", f:result())
    end)

    it("keeps every value, nil holes included", function()
      local f = weft.future()
      f:set_result(nil, 2, nil, nil)
      assert.equal(4, select("#", f:result()))
      local a, b, c, d = f:result()
      assert.is_nil(a)
      assert.equal(2, b)
      assert.is_nil(c)
      assert.is_nil(d)
    end)

    it("keeps zero values", function()
      local f = weft.future()
      f:set_result()
      assert.equal(0, select("#", f:result()))
    end)

    it("makes exception() return nil", function()
      local f = weft.future()
      f:set_result(false)
      assert.is_nil(f:exception())
      assert.is_false(f:result())
    end)

    it("raises kind invalid_state the second time", function()
      local f = weft.future()
      f:set_result(1)
      expect_error("invalid_state", f.set_result, f, 2)
      assert.equal(1, f:result())
    end)

    it("raises kind invalid_state on a failed future", function()
      local f = weft.future()
      f:set_exception("boom")
      expect_error("invalid_state", f.set_result, f, 2)
      assert.equal("failed", f:state())
    end)

    it("raises kind invalid_state on a cancelled future", function()
      local f = weft.future()
      f:cancel()
      expect_error("invalid_state", f.set_result, f, 2)
      assert.equal("cancelled", f:state())
    end)
  end)

  describe("set_exception", function()
    it("fails the future", function()
      local f = weft.future()
      f:set_running_or_notify_cancel()
      f:set_exception({ code = 7 })
      assert.equal("failed", f:state())
      assert.is_true(f:done())
      assert.is_false(f:running())
      assert.is_false(f:cancelled())
    end)

    it("makes result() raise the error that was set", function()
      local f = weft.future()
      f:set_exception({ code = 7 })
      local err = util.catch(f.result, f)
      assert.equal(7, payload(err).code)
    end)

    it("makes exception() return the error without raising", function()
      local f = weft.future()
      f:set_exception({ code = 7 })
      local e = f:exception()
      assert.is_not_nil(e)
      assert.equal(7, payload(e).code)
    end)

    it("keeps the kind of a weft.Error", function()
      local f = weft.future()
      f:set_exception(setmetatable({ kind = "timeout", message = "too slow" },
        weft.Error))
      local err = util.catch(f.result, f)
      assert.is_true(weft.is(err, "timeout"))
    end)

    it("raises kind invalid_state on a finished future", function()
      local f = weft.future()
      f:set_result(1)
      expect_error("invalid_state", f.set_exception, f, "late")
      assert.equal(1, f:result())
    end)

    it("raises kind invalid_state the second time", function()
      local f = weft.future()
      f:set_exception({ code = 1 })
      expect_error("invalid_state", f.set_exception, f, { code = 2 })
      assert.equal(1, payload(f:exception()).code)
    end)
  end)

  describe("cancel", function()
    it("cancels a pending future", function()
      local f = weft.future()
      assert.is_true(f:cancel())
      assert.equal("cancelled", f:state())
      assert.is_true(f:cancelled())
      assert.is_true(f:done())
      assert.is_false(f:running())
    end)

    it("returns true again for an already cancelled future", function()
      local f = weft.future()
      f:cancel()
      assert.is_true(f:cancel())
      assert.equal("cancelled", f:state())
    end)

    it("does not cancel a running future", function()
      local f = weft.future()
      f:set_running_or_notify_cancel()
      assert.is_false(f:cancel())
      assert.equal("running", f:state())
      assert.is_false(f:cancelled())
      f:set_result("still mine")
      assert.equal("still mine", f:result())
    end)

    it("does not cancel a finished future", function()
      local f = weft.future()
      f:set_result(1)
      assert.is_false(f:cancel())
      assert.equal("finished", f:state())
      assert.equal(1, f:result())
    end)

    it("does not cancel a failed future", function()
      local f = weft.future()
      f:set_exception("boom")
      assert.is_false(f:cancel())
      assert.equal("failed", f:state())
    end)

    it("makes result() raise kind cancelled", function()
      local f = weft.future()
      f:cancel()
      expect_error("cancelled", f.result, f)
    end)

    it("makes exception() raise kind cancelled", function()
      local f = weft.future()
      f:cancel()
      expect_error("cancelled", f.exception, f)
    end)
  end)

  describe("add_done_callback", function()
    it("runs callbacks in registration order when the future finishes", function()
      local f = weft.future()
      local calls = {}
      for i = 1, 3 do
        f:add_done_callback(function() calls[#calls + 1] = i end)
      end
      assert.same({}, calls)
      f:set_result("v")
      assert.same({ 1, 2, 3 }, calls)
    end)

    it("passes the future to the callback", function()
      local f = weft.future()
      local seen
      f:add_done_callback(function(fut) seen = fut:result() end)
      f:set_result("passed")
      assert.equal("passed", seen)
    end)

    it("calls a callback at once when the future is already done", function()
      local f = weft.future()
      f:set_result(5)
      local seen
      f:add_done_callback(function(fut) seen = fut:result() end)
      assert.equal(5, seen)
    end)

    it("runs each callback exactly once", function()
      local f = weft.future()
      local n = 0
      f:add_done_callback(function() n = n + 1 end)
      f:set_result(1)
      f:result()
      weft.wait({ f })
      f:cancel()
      assert.equal(1, n)
    end)

    it("runs callbacks when the future is cancelled", function()
      local f = weft.future()
      local was_cancelled
      f:add_done_callback(function(fut) was_cancelled = fut:cancelled() end)
      f:cancel()
      assert.is_true(was_cancelled)
    end)

    it("runs callbacks when the future fails", function()
      local f = weft.future()
      local state
      f:add_done_callback(function(fut) state = fut:state() end)
      f:set_exception("boom")
      assert.equal("failed", state)
    end)

    it("ignores an error raised by a callback and runs the next one", function()
      local f = weft.future()
      local calls = {}
      f:add_done_callback(function() calls[#calls + 1] = "a" end)
      f:add_done_callback(function() error("callback exploded") end)
      f:add_done_callback(function() calls[#calls + 1] = "c" end)
      assert.has_no.errors(function() f:set_result(1) end)
      assert.same({ "a", "c" }, calls)
      assert.equal(1, f:result())
    end)

    it("ignores an error raised by a callback on an already done future", function()
      local f = weft.future()
      f:set_result(1)
      assert.has_no.errors(function()
        f:add_done_callback(function() error("late callback exploded") end)
      end)
      assert.equal(1, f:result())
    end)

    it("writes a callback's error to stderr", function()
      local out = util.run_lua [[
        local weft = require "weft"
        local f = weft.future()
        f:add_done_callback(function() error("callback-exploded-4711") end)
        f:set_result(1)
        io.stdout:write("still-alive:", tostring(f:result()), "\n")
      ]]
      assert.truthy(out:find("callback-exploded-4711", 1, true), out)
      assert.truthy(out:find("still-alive:1", 1, true), out)
    end)
  end)
end)

describe("a thread task's future", function()
  after_each(util.cleanup)

  it("is pending while every worker is busy", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local blocker = ex:submit(function(hold) hold() end, g.hold)
    g:wait_started()
    local f = ex:submit(function() return 1 end)
    assert.equal("pending", f:state())
    assert.is_false(f:running())
    assert.is_false(f:done())
    g:release()
    blocker:result()
    assert.equal(1, f:result())
  end)

  it("is running while its task runs", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local f = ex:submit(function(hold) hold(); return "out" end, g.hold)
    g:wait_started()
    assert.equal("running", f:state())
    assert.is_true(f:running())
    assert.is_false(f:done())
    g:release()
    assert.equal("out", f:result())
    assert.equal("finished", f:state())
    assert.is_false(f:running())
    assert.is_true(f:done())
  end)

  it("is failed when its task raised", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(function() error("task went wrong") end)
    local e = f:exception()
    assert.is_true(weft.is(e, "task"))
    assert.equal("failed", f:state())
    assert.is_true(f:done())
    assert.is_false(f:cancelled())
  end)

  it("raises kind task from result() with the task's error value", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(function() error("task went wrong", 0) end)
    local err = expect_error("task", f.result, f)
    assert.equal("task went wrong", err.value)
  end)

  it("returns nil from exception() when the task succeeded", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(function() return 1 end)
    assert.is_nil(f:exception())
  end)

  it("raises kind timeout from result(timeout) while the task keeps going", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local f = ex:submit(function(hold) hold(); return "finally" end, g.hold)
    g:wait_started()
    expect_error("timeout", f.result, f, 0.05)
    assert.equal("running", f:state())
    g:release()
    assert.equal("finally", f:result())
  end)

  it("raises kind timeout from exception(timeout) while the task runs", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local f = ex:submit(function(hold) hold() end, g.hold)
    g:wait_started()
    expect_error("timeout", f.exception, f, 0.05)
    g:release()
    assert.is_nil(f:exception())
  end)

  describe("cancel", function()
    it("cancels a pending task, which then never runs", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local marker = util.tmpname()
      local blocker = ex:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local f = ex:submit(touch, marker)
      assert.is_true(f:cancel())
      assert.equal("cancelled", f:state())
      assert.is_true(f:cancelled())
      assert.is_true(f:done())
      g:release()
      blocker:result()
      ex:shutdown { wait = true }
      assert.is_false(util.exists(marker))
      expect_error("cancelled", f.result, f)
      assert.equal(1, ex:stats().cancelled)
    end)

    it("does not cancel a running task", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return "completed" end, g.hold)
      g:wait_started()
      assert.is_false(f:cancel())
      assert.equal("running", f:state())
      g:release()
      assert.equal("completed", f:result())
      assert.is_false(f:cancelled())
    end)

    it("does not cancel a finished task", function()
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return 3 end)
      assert.equal(3, f:result())
      assert.is_false(f:cancel())
      assert.equal("finished", f:state())
    end)
  end)

  describe("cancel{force = true}", function()
    it("stops a running thread task at its next Lua instruction", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local arrive = g.arrive
      -- Escape hatch: if the runtime does not stop the loop, the spec makes
      -- it end by creating `stop`, and the loop then leaves `escaped`.
      local stop, escaped = util.tmpname(), util.tmpname()
      finally(function() touch(stop) end)
      local f = ex:submit(function()
        arrive()
        local i = 0
        while true do
          i = i + 1
          if i % 100000 == 0 then
            local h = io.open(stop, "r")
            if h then
              h:close()
              local e = assert(io.open(escaped, "w"))
              e:close()
              return "escaped"
            end
          end
        end
      end)
      g:wait_started()
      assert.is_true(f:cancel { force = true })
      weft.wait({ f })
      assert.equal("cancelled", f:state())
      assert.is_true(f:cancelled())
      expect_error("cancelled", f.result, f)
      touch(stop)
      -- the worker is free again: the next task runs on it
      assert.equal("next", ex:submit(function() return "next" end):result())
      assert.is_false(util.exists(escaped))
    end)

    it("cancels a pending task like cancel()", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local blocker = ex:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local f = ex:submit(function() return 1 end)
      assert.is_true(f:cancel { force = true })
      assert.equal("cancelled", f:state())
      g:release()
      blocker:result()
    end)

    it("returns false for a finished task", function()
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return 1 end)
      f:result()
      assert.is_false(f:cancel { force = true })
      assert.equal("finished", f:state())
    end)
  end)

  describe("add_done_callback", function()
    it("runs the callback in the owning state when it next waits", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return "v" end, g.hold)
      g:wait_started()
      local seen = {}
      f:add_done_callback(function(fut) seen[#seen + 1] = fut:result() end)
      assert.same({}, seen)
      g:release()
      assert.equal("v", f:result())
      -- `seen` is a local of this state: the callback ran here
      assert.same({ "v" }, seen)
    end)

    it("runs the callbacks of a worker-completed future in registration order", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local calls = {}
      for i = 1, 4 do
        f:add_done_callback(function() calls[#calls + 1] = i end)
      end
      g:release()
      weft.wait({ f })
      assert.same({ 1, 2, 3, 4 }, calls)
    end)

    it("calls a callback at once on a task that already finished", function()
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return "early" end)
      f:result()
      local seen
      f:add_done_callback(function(fut) seen = fut:result() end)
      assert.equal("early", seen)
    end)

    it("never kills a worker when the callback raises", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return 1 end, g.hold)
      g:wait_started()
      f:add_done_callback(function() error("callback exploded") end)
      g:release()
      assert.equal(1, f:result())
      local again = ex:submit(function() return "worker alive" end)
      assert.equal("worker alive", again:result())
      assert.equal(1, ex:stats().workers)
    end)
  end)
end)
