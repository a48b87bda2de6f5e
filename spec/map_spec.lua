-- ex:map(fn, items [, opts]) on the thread pool (and inline).
local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local expect_error = util.expect_error

local function square(x) return x * x end

-- Runs a map loop to the end and returns the indices and values it yielded.
local function collect(iter)
  local idx, vals = {}, {}
  for i, v in iter do
    idx[#idx + 1] = i
    vals[#vals + 1] = v
  end
  return idx, vals
end

-- An iterator function over 1..n (n = nil: endless) that counts its calls.
local function counter(n)
  local state = { pulled = 0 }
  state.next = function()
    if n and state.pulled >= n then return nil end
    state.pulled = state.pulled + 1
    return state.pulled
  end
  return state
end

describe("ex:map", function()
  after_each(util.cleanup)

  describe("over a list", function()
    it("yields index and result in input order", function()
      local ex = util.threads { workers = 2 }
      local idx, vals = collect(ex:map(square, { 1, 2, 3, 4, 5, 6, 7 }))
      assert.same({ 1, 2, 3, 4, 5, 6, 7 }, idx)
      assert.same({ 1, 4, 9, 16, 25, 36, 49 }, vals)
    end)

    it("yields nothing for an empty list", function()
      local ex = util.threads { workers = 1 }
      local idx = collect(ex:map(square, {}))
      assert.same({}, idx)
    end)

    it("yields only the first result of each call", function()
      local ex = util.threads { workers = 1 }
      local got = {}
      for i, v, extra in ex:map(function(x) return x, "second" end, { "a", "b" }) do
        got[i] = { v, extra }
      end
      assert.same({ { "a" }, { "b" } }, got)
    end)

    it("yields an index for a call that returned nil", function()
      local ex = util.threads { workers = 1 }
      local seen, n = {}, 0
      for i, v in ex:map(function(x) if x ~= 2 then return x end end, { 1, 2, 3 }) do
        n = n + 1
        seen[i] = v == nil and "nil" or v
      end
      assert.equal(3, n)
      assert.same({ 1, "nil", 3 }, seen)
    end)

    it("keeps input order when an early item finishes last", function()
      local ex = util.threads { workers = 2 }
      local g = gate.new()
      local hold, open = g.hold, g.open
      -- item 1 is held until item 4 runs and opens the gate, so items 2 and
      -- 3 finish before item 1 does
      local function work(x)
        if x == 1 then hold() end
        if x == 4 then open() end
        return x * 10
      end
      local idx, vals = collect(ex:map(work, { 1, 2, 3, 4 }, { chunksize = 1, window = 8 }))
      assert.same({ 1, 2, 3, 4 }, idx)
      assert.same({ 10, 20, 30, 40 }, vals)
    end)

    it("runs standard library C functions", function()
      local ex = util.threads { workers = 2 }
      local _, vals = collect(ex:map(string.upper, { "a", "b", "c" }))
      assert.same({ "A", "B", "C" }, vals)
    end)
  end)

  describe("over an iterator function", function()
    it("calls it until it returns nil", function()
      local ex = util.threads { workers = 2 }
      local items = counter(6)
      local idx, vals = collect(ex:map(square, items.next))
      assert.same({ 1, 2, 3, 4, 5, 6 }, idx)
      assert.same({ 1, 4, 9, 16, 25, 36 }, vals)
      assert.equal(6, items.pulled)
    end)

    it("works with an endless iterator and break", function()
      local ex = util.threads { workers = 2 }
      local items = counter(nil)
      local last
      for i, v in ex:map(square, items.next) do
        assert.equal(i * i, v)
        last = i
        if i == 50 then break end
      end
      assert.equal(50, last)
      -- the default window is bounded, so map did not drain the iterator
      assert.is_true(items.pulled < 100000)
    end)

    it("never pulls more than the window ahead", function()
      local ex = util.threads { workers = 2 }
      local items = counter(nil)
      for i in ex:map(square, items.next, { window = 4, chunksize = 1 }) do
        -- at most `window` items are in flight beyond the one yielded
        assert.is_true(items.pulled <= i + 4 + 1,
          ("pulled %d items when yielding item %d"):format(items.pulled, i))
        if i == 20 then break end
      end
      assert.is_true(items.pulled <= 25)
    end)
  end)

  describe("ordered = false", function()
    it("yields every index with its own result", function()
      local ex = util.threads { workers = 2 }
      local got, n = {}, 0
      for i, v in ex:map(square, { 1, 2, 3, 4, 5, 6, 7, 8 }, { ordered = false }) do
        got[i] = v
        n = n + 1
      end
      assert.equal(8, n)
      assert.same({ 1, 4, 9, 16, 25, 36, 49, 64 }, got)
    end)

    it("yields in completion order", function()
      local ex = util.threads { workers = 2 }
      local g = gate.new()
      local hold = g.hold
      local function work(x)
        if x == 1 then hold() end
        return x
      end
      local order = {}
      for i in ex:map(work, { 1, 2, 3 }, { ordered = false, chunksize = 1, window = 8 }) do
        order[#order + 1] = i
        -- item 1 cannot finish before this release
        if #order == 1 then g:release() end
      end
      assert.are_not.equal(1, order[1])
      table.sort(order)
      assert.same({ 1, 2, 3 }, order)
    end)
  end)

  describe("chunksize", function()
    it("keeps every index and result with several items per message", function()
      local ex = util.threads { workers = 2 }
      local items = {}
      for i = 1, 23 do items[i] = i end
      local idx, vals = collect(ex:map(square, items, { chunksize = 5 }))
      assert.equal(23, #idx)
      for i = 1, 23 do
        assert.equal(i, idx[i])
        assert.equal(i * i, vals[i])
      end
    end)

    it("keeps every index and result unordered", function()
      local ex = util.threads { workers = 2 }
      local items = {}
      for i = 1, 23 do items[i] = i end
      local got, n = {}, 0
      for i, v in ex:map(square, items, { chunksize = 4, ordered = false }) do
        got[i] = v
        n = n + 1
      end
      assert.equal(23, n)
      for i = 1, 23 do assert.equal(i * i, got[i]) end
    end)
  end)

  describe("spread", function()
    it("unpacks each item into the call", function()
      local ex = util.threads { workers = 2 }
      local _, vals = collect(ex:map(function(a, b, c) return a + b + (c or 0) end,
        { { 1, 2 }, { 3, 4, 5 }, { 10, 20 } }, { spread = true }))
      assert.same({ 3, 12, 30 }, vals)
    end)

    it("passes each item whole without spread", function()
      local ex = util.threads { workers = 1 }
      local _, vals = collect(ex:map(function(t) return #t end, { { 1, 2 }, { 3, 4, 5 } }))
      assert.same({ 2, 3 }, vals)
    end)
  end)

  describe("errors", function()
    it("raises a call's error when its value is reached", function()
      local ex = util.threads { workers = 2 }
      local got = {}
      local err = expect_error("task", function()
        for i, v in ex:map(function(x)
          if x == 3 then error("bad item " .. x, 0) end
          return x
        end, { 1, 2, 3, 4, 5 }, { chunksize = 1 }) do
          got[i] = v
        end
      end)
      assert.same({ 1, 2 }, got)
      assert.equal("bad item 3", err.value)
    end)

    it("raises a call's error when it is reached unordered", function()
      local ex = util.threads { workers = 2 }
      local err = expect_error("task", function()
        for _ in ex:map(function(x)
          if x == 2 then error({ item = x }) end
          return x
        end, { 1, 2, 3 }, { ordered = false }) do
        end
      end)
      assert.equal(2, err.value.item)
    end)

    it("raises kind timeout when the timeout passes first", function()
      local ex = util.threads { workers = 2 }
      local g = gate.new()
      local hold = g.hold
      local got = {}
      expect_error("timeout", function()
        for i, v in ex:map(function(x)
          if x == 2 then hold() end
          return x
        end, { 1, 2, 3 }, { timeout = 0.05, chunksize = 1 }) do
          got[i] = v
        end
      end)
      assert.is_nil(got[2])
      g:release()
    end)

    it("raises kind shutdown at the call after shutdown", function()
      local ex = util.threads { workers = 1 }
      ex:shutdown()
      expect_error("shutdown", ex.map, ex, square, { 1 })
    end)
  end)

  describe("on the inline executor", function()
    it("yields results in input order", function()
      local ex = util.track(weft.inline())
      local idx, vals = collect(ex:map(square, { 3, 1, 2 }))
      assert.same({ 1, 2, 3 }, idx)
      assert.same({ 9, 1, 4 }, vals)
    end)

    it("raises a call's error when its value is reached", function()
      local ex = util.track(weft.inline())
      local got = {}
      local err = expect_error("task", function()
        for i, v in ex:map(function(x)
          if x == 2 then error("inline bad", 0) end
          return x
        end, { 1, 2, 3 }) do
          got[i] = v
        end
      end)
      assert.same({ 1 }, got)
      assert.equal("inline bad", err.value)
    end)
  end)
end)
