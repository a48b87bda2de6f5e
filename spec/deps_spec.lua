-- Futures passed to submit are dependencies: the task waits for them and
-- receives their first result; a failed or cancelled one fails it.
local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local expect_error = util.expect_error

-- A task taking a dependency's value and a path: writes a marker file
-- there, proof that it ran.
local function touch(_, path)
  local f = assert(io.open(path, "w"))
  f:write("ran")
  f:close()
end

describe("dependencies", function()
  local ex
  before_each(function() ex = util.threads { workers = 2 } end)
  after_each(util.cleanup)

  describe("a future as a top-level argument", function()
    it("is replaced by its first result", function()
      local up = ex:submit(function() return 2, 3 end)
      local f = ex:submit(function(x, y, z) return x, y, z end, up, 10)
      local x, y, z = f:result()
      assert.equal(2, x)
      assert.equal(10, y)
      assert.is_nil(z)
    end)

    it("keeps the argument count when the first result is nil", function()
      local up = weft.future()
      up:set_result(nil, "ignored")
      local f = ex:submit(function(...) return select("#", ...), (...), select(2, ...) end, up, "b")
      local n, a, b = f:result()
      assert.equal(2, n)
      assert.is_nil(a)
      assert.equal("b", b)
    end)

    it("keeps the task pending until a bare future is set", function()
      local up = util.future()
      local f = ex:submit(function(x) return x * 2 end, up)
      assert.equal("pending", f:state())
      assert.is_false(f:running())
      expect_error("timeout", f.result, f, 0.05)
      assert.equal("pending", f:state())
      up:set_result(21)
      assert.equal(42, f:result())
    end)

    it("does not occupy a worker while it waits", function()
      local pool = util.threads { workers = 1 }
      local up = util.future()
      local waiting = pool:submit(function(x) return x end, up)
      local other = pool:submit(function() return "ran meanwhile" end)
      assert.equal("ran meanwhile", other:result())
      assert.equal("pending", waiting:state())
      up:set_result("later")
      assert.equal("later", waiting:result())
    end)

    it("can be a future from another executor", function()
      local other = util.threads { workers = 1 }
      local inline = util.track(weft.inline())
      local a = other:submit(function() return 5 end)
      local b = inline:submit(function() return 7 end)
      local f = ex:submit(function(x, y) return x * y end, a, b)
      assert.equal(35, f:result())
    end)

    it("can be the same future twice", function()
      local up = ex:submit(function() return "u" end)
      assert.equal("uu", ex:submit(function(a, b) return a .. b end, up, up):result())
    end)
  end)

  describe("a future nested in a table argument", function()
    it("is replaced by its first result", function()
      local a = ex:submit(function() return 1, "ignored" end)
      local b = weft.future()
      local c = ex:submit(function() return { 3 } end)
      local f = ex:submit(function(t) return t.a + t.list[1] + t.list.deep.c[1], t.plain end,
        { a = a, list = { b, deep = { c = c } }, plain = "kept" })
      b:set_result(2)
      local sum, plain = f:result()
      assert.equal(6, sum)
      assert.equal("kept", plain)
    end)

    it("keeps the task pending until it is done", function()
      local up = util.future()
      local f = ex:submit(function(t) return t[1][1] end, { { up } })
      assert.equal("pending", f:state())
      up:set_result("nested")
      assert.equal("nested", f:result())
    end)
  end)

  describe("a failed dependency", function()
    it("fails the task with kind dependency caused by the upstream error", function()
      local up = ex:submit(function() error("upstream-boom", 0) end)
      local f = ex:submit(function(x) return x end, up)
      local err = expect_error("dependency", f.result, f)
      assert.is_true(weft.is(err.cause, "task"), util.text(err))
      assert.equal("upstream-boom", err.cause.value)
      assert.equal("failed", f:state())
    end)

    it("does not run the task", function()
      local marker = util.tmpname()
      local up = ex:submit(function() error("no") end)
      local f = ex:submit(touch, up, marker)
      expect_error("dependency", f.result, f)
      ex:shutdown { wait = true }
      assert.is_false(util.exists(marker))
    end)

    it("fails the task when it is nested in a table argument", function()
      local up = weft.future()
      up:set_exception({ code = 9 })
      local f = ex:submit(function(t) return t end, { x = { up } })
      local err = expect_error("dependency", f.result, f)
      assert.is_not_nil(err.cause)
    end)

    it("fails the task when a bare future fails later", function()
      local marker = util.tmpname()
      local up = util.future()
      local f = ex:submit(touch, up, marker)
      up:set_exception("late failure")
      local err = expect_error("dependency", f.result, f)
      assert.truthy(util.mentions(err.cause, "late failure"), util.text(err))
      ex:shutdown { wait = true }
      assert.is_false(util.exists(marker))
    end)

    it("is counted as failed, not completed", function()
      local up = weft.future()
      up:set_exception("x")
      local f = ex:submit(function(x) return x end, up)
      weft.wait({ f })
      ex:shutdown { wait = true }
      local s = ex:stats()
      assert.equal(1, s.failed)
      assert.equal(0, s.completed)
    end)
  end)

  describe("a cancelled dependency", function()
    it("fails the task with kind dependency caused by the cancellation", function()
      local up = weft.future()
      up:cancel()
      local f = ex:submit(function(x) return x end, up)
      local err = expect_error("dependency", f.result, f)
      assert.is_true(weft.is(err.cause, "cancelled"), util.text(err))
    end)

    it("fails a task that was already waiting, without running it", function()
      local marker = util.tmpname()
      local up = util.future()
      local f = ex:submit(touch, up, marker)
      assert.is_true(up:cancel())
      local err = expect_error("dependency", f.result, f)
      assert.is_true(weft.is(err.cause, "cancelled"), util.text(err))
      ex:shutdown { wait = true }
      assert.is_false(util.exists(marker))
    end)

    it("fails the task when a pending thread task is cancelled", function()
      local pool = util.threads { workers = 1 }
      local g = gate.new()
      local blocker = pool:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local up = pool:submit(function() return 1 end)
      local f = ex:submit(function(x) return x end, up)
      assert.is_true(up:cancel())
      expect_error("dependency", f.result, f)
      g:release()
      blocker:result()
    end)
  end)

  describe("a waiting task", function()
    it("can be cancelled, and then never runs", function()
      local marker = util.tmpname()
      local up = util.future()
      local f = ex:submit(touch, up, marker)
      assert.is_true(f:cancel())
      assert.equal("cancelled", f:state())
      up:set_result("go")
      ex:shutdown { wait = true }
      assert.is_false(util.exists(marker))
      expect_error("cancelled", f.result, f)
    end)
  end)

  describe("chains", function()
    it("run a chain of dependent tasks on one worker", function()
      local pool = util.threads { workers = 1 }
      local root = util.future()
      local fs = { root }
      for i = 2, 10 do
        fs[i] = pool:submit(function(x) return x + 1 end, fs[i - 1])
      end
      assert.equal("pending", fs[10]:state())
      root:set_result(1)
      assert.equal(10, fs[10]:result())
    end)

    it("pass a failure down the chain, each cause naming the step above", function()
      local root = ex:submit(function() error("root-cause", 0) end)
      local mid = ex:submit(function(x) return x end, root)
      local leaf = ex:submit(function(x) return x end, mid)
      local err = expect_error("dependency", leaf.result, leaf)
      assert.is_true(weft.is(err.cause, "dependency"), util.text(err))
      assert.is_true(weft.is(err.cause.cause, "task"), util.text(err))
      assert.equal("root-cause", err.cause.cause.value)
    end)

    it("fan in: a task waits for all of its dependencies", function()
      local parts = {}
      for i = 1, 5 do parts[i] = ex:submit(function(x) return x * x end, i) end
      local total = ex:submit(function(list)
        local s = 0
        for _, v in ipairs(list) do s = s + v end
        return s
      end, parts)
      assert.equal(55, total:result())
    end)
  end)

  describe("on the inline executor", function()
    it("waits inside submit for a thread task dependency", function()
      local inline = util.track(weft.inline())
      local up = ex:submit(function() return 4 end)
      local f = inline:submit(function(x) return x + 1 end, up)
      assert.is_true(f:done())
      assert.equal(5, f:result())
    end)

    it("fails with kind dependency for a failed dependency", function()
      local inline = util.track(weft.inline())
      local up = weft.future()
      up:set_exception("bad upstream")
      local f = inline:submit(function(x) return x end, up)
      local err = expect_error("dependency", f.result, f)
      assert.truthy(util.mentions(err.cause, "bad upstream"), util.text(err))
    end)
  end)
end)
