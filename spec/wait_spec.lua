-- weft.wait, weft.as_completed and weft.gather.
local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local expect_error = util.expect_error

local function done_future(...)
  local f = weft.future()
  f:set_result(...)
  return f
end

local function failed_future(err)
  local f = weft.future()
  f:set_exception(err)
  return f
end

-- Asserts that list `got` holds exactly the futures of `want`, in order.
local function same_futures(want, got)
  assert.equal(#want, #got)
  for i = 1, #want do
    assert.is_true(want[i] == got[i], "future " .. i .. " differs")
  end
end

describe("weft.wait", function()
  after_each(util.cleanup)

  it("has three distinct return_when constants", function()
    assert.is_not_nil(weft.ALL_COMPLETED)
    assert.is_not_nil(weft.FIRST_COMPLETED)
    assert.is_not_nil(weft.FIRST_EXCEPTION)
    assert.are_not.equal(weft.ALL_COMPLETED, weft.FIRST_COMPLETED)
    assert.are_not.equal(weft.ALL_COMPLETED, weft.FIRST_EXCEPTION)
    assert.are_not.equal(weft.FIRST_COMPLETED, weft.FIRST_EXCEPTION)
  end)

  it("returns two empty lists for no futures", function()
    local done, not_done = weft.wait({})
    assert.same({}, done)
    assert.same({}, not_done)
  end)

  describe("ALL_COMPLETED (the default)", function()
    it("waits for every thread task", function()
      local ex = util.threads { workers = 2 }
      local fs = {}
      for i = 1, 6 do
        fs[i] = ex:submit(function(x) return x * x end, i)
      end
      local done, not_done = weft.wait(fs)
      same_futures(fs, done)
      assert.same({}, not_done)
      for i = 1, 6 do
        assert.is_true(fs[i]:done())
        assert.equal(i * i, fs[i]:result())
      end
    end)

    it("lists done futures in input order, not completion order", function()
      local a, b, c = weft.future(), weft.future(), weft.future()
      c:set_result(3)
      a:set_result(1)
      b:set_result(2)
      local done, not_done = weft.wait({ a, b, c })
      same_futures({ a, b, c }, done)
      assert.same({}, not_done)
    end)

    it("counts failed and cancelled futures as done", function()
      local ok, bad, gone = done_future(1), failed_future("boom"), weft.future()
      gone:cancel()
      local done, not_done = weft.wait({ ok, bad, gone }, { return_when = weft.ALL_COMPLETED })
      same_futures({ ok, bad, gone }, done)
      assert.same({}, not_done)
    end)

    it("returns at the timeout with both lists in input order", function()
      local n1, d1, n2, d2 = util.future(), done_future(1), util.future(), done_future(2)
      local done, not_done = weft.wait({ n1, d1, n2, d2 }, { timeout = 0.05 })
      same_futures({ d1, d2 }, done)
      same_futures({ n1, n2 }, not_done)
      assert.is_false(n1:done())
    end)

    it("returns at the timeout while a thread task is still running", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local done, not_done = weft.wait({ f }, { timeout = 0.05 })
      same_futures({}, done)
      same_futures({ f }, not_done)
      g:release()
      local done2 = weft.wait({ f })
      same_futures({ f }, done2)
    end)
  end)

  describe("FIRST_COMPLETED", function()
    it("returns as soon as one future is done", function()
      local a, b, c = util.future(), done_future("b"), util.future()
      local done, not_done = weft.wait({ a, b, c }, { return_when = weft.FIRST_COMPLETED })
      same_futures({ b }, done)
      same_futures({ a, c }, not_done)
    end)

    it("lists every future already done, in input order", function()
      local a, b, c, d = done_future(1), util.future(), failed_future("x"), util.future()
      local done, not_done = weft.wait({ a, b, c, d }, { return_when = weft.FIRST_COMPLETED })
      same_futures({ a, c }, done)
      same_futures({ b, d }, not_done)
    end)

    it("wakes up when a thread task finishes", function()
      local ex = util.threads { workers = 1 }
      local never = util.future()
      local f = ex:submit(function() return "quick" end)
      local done, not_done = weft.wait({ never, f }, { return_when = weft.FIRST_COMPLETED })
      same_futures({ f }, done)
      same_futures({ never }, not_done)
      assert.equal("quick", f:result())
    end)

    it("leaves a held task in not_done", function()
      local ex = util.threads { workers = 2 }
      local g = gate.new()
      local held = ex:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local quick = ex:submit(function() return 1 end)
      local done, not_done = weft.wait({ held, quick }, { return_when = weft.FIRST_COMPLETED })
      same_futures({ quick }, done)
      same_futures({ held }, not_done)
      assert.is_false(held:done())
    end)

    it("returns empty done at the timeout when nothing finished", function()
      local a, b = util.future(), util.future()
      local done, not_done = weft.wait({ a, b },
        { return_when = weft.FIRST_COMPLETED, timeout = 0.05 })
      same_futures({}, done)
      same_futures({ a, b }, not_done)
    end)
  end)

  describe("FIRST_EXCEPTION", function()
    it("returns when a task fails, leaving the others not done", function()
      local ex = util.threads { workers = 2 }
      local g = gate.new()
      local ok = done_future("fine")
      local held = ex:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local bad = ex:submit(function() error("fails first") end)
      local done, not_done = weft.wait({ held, ok, bad }, { return_when = weft.FIRST_EXCEPTION })
      same_futures({ ok, bad }, done)
      same_futures({ held }, not_done)
      assert.is_false(held:done())
    end)

    it("returns at once when a future already failed", function()
      local never, bad = util.future(), failed_future("early")
      local done, not_done = weft.wait({ never, bad }, { return_when = weft.FIRST_EXCEPTION })
      same_futures({ bad }, done)
      same_futures({ never }, not_done)
    end)

    it("waits for all when none fails", function()
      local ex = util.threads { workers = 2 }
      local fs = {}
      for i = 1, 4 do fs[i] = ex:submit(function(x) return x end, i) end
      local done, not_done = weft.wait(fs, { return_when = weft.FIRST_EXCEPTION })
      same_futures(fs, done)
      assert.same({}, not_done)
    end)

    it("does not return early for a successful future", function()
      local ok, never = done_future(1), util.future()
      local done, not_done = weft.wait({ ok, never },
        { return_when = weft.FIRST_EXCEPTION, timeout = 0.05 })
      same_futures({ ok }, done)
      same_futures({ never }, not_done)
    end)
  end)

  it("mixes futures from different executors", function()
    local inline = weft.inline()
    local pool_a = util.threads { workers = 1 }
    local pool_b = util.threads { workers = 2 }
    local bare = weft.future()
    local fs = {
      inline:submit(function() return "inline" end),
      pool_a:submit(function() return "a" end),
      bare,
      pool_b:submit(function() return "b" end),
    }
    bare:set_result("bare")
    local done, not_done = weft.wait(fs)
    same_futures(fs, done)
    assert.same({}, not_done)
    local got = {}
    for i, f in ipairs(fs) do got[i] = f:result() end
    assert.same({ "inline", "a", "bare", "b" }, got)
    inline:shutdown()
  end)
end)

describe("weft.as_completed", function()
  after_each(util.cleanup)

  it("yields every future once they are done", function()
    local ex = util.threads { workers = 2 }
    local fs, want = {}, {}
    for i = 1, 8 do
      fs[i] = ex:submit(function(x) return x * 10 end, i)
      want[i * 10] = true
    end
    local got, n = {}, 0
    for f in weft.as_completed(fs) do
      assert.is_true(f:done())
      got[f:result()] = true
      n = n + 1
    end
    assert.equal(8, n)
    assert.same(want, got)
  end)

  it("yields already finished futures first", function()
    local p, d = weft.future(), done_future("d")
    local order = {}
    for f in weft.as_completed({ p, d }) do
      order[#order + 1] = f:result()
      if #order == 1 then p:set_result("p") end
    end
    assert.same({ "d", "p" }, order)
  end)

  it("yields a finished thread task before a held one", function()
    local ex = util.threads { workers = 2 }
    local g = gate.new()
    local held = ex:submit(function(hold) hold(); return "held" end, g.hold)
    g:wait_started()
    local quick = ex:submit(function() return "quick" end)
    quick:result()
    local order = {}
    for f in weft.as_completed({ held, quick }) do
      order[#order + 1] = f:result()
      g:release()
    end
    assert.same({ "quick", "held" }, order)
  end)

  it("yields duplicates once", function()
    local a, b = done_future("a"), weft.future()
    local order = {}
    -- the timeout only turns a wrong "wait for the duplicate" into a failure
    for f in weft.as_completed({ a, b, a, b, a }, 60) do
      order[#order + 1] = f:result()
      if f == a then b:set_result("b") end
    end
    assert.same({ "a", "b" }, order)
  end)

  it("yields failed and cancelled futures", function()
    local bad, gone = failed_future("boom"), weft.future()
    gone:cancel()
    local n = 0
    for f in weft.as_completed({ bad, gone }) do
      assert.is_true(f:done())
      n = n + 1
    end
    assert.equal(2, n)
  end)

  it("raises kind timeout when the timeout passes first", function()
    local d, never = done_future("d"), util.future()
    local got = {}
    local err = expect_error("timeout", function()
      for f in weft.as_completed({ never, d }, 0.05) do
        got[#got + 1] = f:result()
      end
    end)
    assert.same({ "d" }, got)
    assert.is_string(err.message)
    assert.is_false(never:done())
  end)

  it("yields nothing for an empty list", function()
    local n = 0
    for _ in weft.as_completed({}) do n = n + 1 end
    assert.equal(0, n)
  end)
end)

describe("weft.gather", function()
  after_each(util.cleanup)

  it("returns the first result of a single future", function()
    assert.equal(1, weft.gather(done_future(1, 2, 3)))
  end)

  it("replaces futures in nested tables and keeps other values", function()
    local ex = util.threads { workers = 2 }
    local a = ex:submit(function() return "a" end)
    local b = ex:submit(function() return 2, "ignored" end)
    local c = done_future({ deep = true })
    local got = weft.gather({ a, { b, x = c, keep = "k" }, 5, "s", flag = false })
    assert.same({ "a", { 2, x = { deep = true }, keep = "k" }, 5, "s", flag = false }, got)
  end)

  it("waits for thread tasks that are not done yet", function()
    local ex = util.threads { workers = 1 }
    local fs = {}
    for i = 1, 5 do fs[i] = ex:submit(function(x) return -x end, i) end
    assert.same({ r = { -1, -2, -3, -4, -5 } }, weft.gather({ r = fs }))
  end)

  it("raises the error of a failed future", function()
    local ex = util.threads { workers = 1 }
    local bad = ex:submit(function() error("gather me", 0) end)
    local err = expect_error("task", weft.gather, { done_future(1), { bad } })
    assert.equal("gather me", err.value)
  end)

  it("raises kind cancelled for a cancelled future", function()
    local gone = weft.future()
    gone:cancel()
    expect_error("cancelled", weft.gather, { ok = done_future(1), gone = gone })
  end)
end)
