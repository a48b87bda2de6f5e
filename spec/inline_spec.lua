-- weft.inline(): runs each task synchronously, in the caller, at submit time,
-- copying arguments and results through the wire format.
local weft = require "weft"
local util = require "helpers.util"

local expect_error = util.expect_error

describe("weft.inline", function()
  local ex
  before_each(function() ex = util.track(weft.inline()) end)
  after_each(util.cleanup)

  it("runs the task inside submit", function()
    local marker = util.tmpname()
    local f = ex:submit(function(path)
      local h = assert(io.open(path, "w"))
      h:write("ran")
      h:close()
      return "done"
    end, marker)
    -- no wait of any kind yet
    assert.is_true(util.exists(marker))
    assert.is_true(f:done())
    assert.equal("finished", f:state())
    assert.equal("done", f:result())
    os.remove(marker)
  end)

  it("returns every value, nil holes included", function()
    local f = ex:submit(function() return nil, "b", nil end)
    assert.equal(3, select("#", f:result()))
    local a, b, c = f:result()
    assert.is_nil(a)
    assert.equal("b", b)
    assert.is_nil(c)
  end)

  it("runs standard library C functions", function()
    assert.equal("xxx", ex:submit(string.rep, "x", 3):result())
  end)

  it("copies arguments, so the task cannot change the caller's table", function()
    local t = { n = 1 }
    local back = ex:submit(function(x) x.n = 2; return x end, t):result()
    assert.equal(1, t.n)
    assert.equal(2, back.n)
    assert.are_not.equal(t, back)
  end)

  it("captures a task error in the future instead of raising from submit", function()
    local f
    assert.has_no.errors(function()
      f = ex:submit(function() error("inline-boom", 0) end)
    end)
    assert.equal("failed", f:state())
    local err = expect_error("task", f.result, f)
    assert.equal("inline-boom", err.value)
  end)

  it("raises kind serialization at submit for a value that cannot be copied", function()
    local err = expect_error("serialization", ex.submit, ex, function(x) return x end,
      { handle = io.stdout })
    assert.truthy(util.mentions(err, "userdata"), util.text(err))
  end)

  it("fails the future with kind serialization for a result that cannot be copied", function()
    local f = ex:submit(function() return io.stdout end)
    expect_error("serialization", f.result, f)
    assert.equal("ok", ex:submit(function() return "ok" end):result())
  end)

  it("uses a dependency that is already done", function()
    local up = weft.future()
    up:set_result(20, "ignored")
    assert.equal(21, ex:submit(function(x) return x + 1 end, up):result())
  end)

  it("calls a done callback at once", function()
    local f = ex:submit(function() return "now" end)
    local seen
    f:add_done_callback(function(fut) seen = fut:result() end)
    assert.equal("now", seen)
  end)

  it("cannot cancel a task it already ran", function()
    local f = ex:submit(function() return 1 end)
    assert.is_false(f:cancel())
    assert.equal(1, f:result())
  end)

  it("behaves like a pool of one in stats", function()
    ex:submit(function() return 1 end)
    ex:submit(function() return 2 end)
    ex:submit(function() error("x") end)
    local s = ex:stats()
    assert.equal(1, s.workers)
    assert.equal(0, s.busy)
    assert.equal(0, s.queued)
    assert.equal(2, s.completed)
    assert.equal(1, s.failed)
    assert.equal(0, s.cancelled)
    assert.equal(0, s.timed_out)
  end)

  it("raises kind shutdown from submit and map after shutdown, which is idempotent", function()
    ex:shutdown()
    assert.has_no.errors(function() ex:shutdown { wait = true } end)
    expect_error("shutdown", ex.submit, ex, function() end)
    expect_error("shutdown", ex.map, ex, function(x) return x end, { 1 })
  end)

  it("works as a to-be-closed variable", function()
    local outer
    do
      local inl <close> = weft.inline()
      outer = inl
      assert.equal(2, inl:submit(function() return 2 end):result())
    end
    expect_error("shutdown", outer.submit, outer, function() end)
  end)
end)
