-- Executor construction: weft.executor(spec) and bad options (kind config).
local weft = require "weft"
local util = require "helpers.util"

local expect_error = util.expect_error

describe("weft.threads options", function()
  after_each(util.cleanup)

  for _, bad in ipairs { 0, -1, 1.5, "x", true, math.huge } do
    it("raises kind config for workers = " .. tostring(bad), function()
      local err = expect_error("config", weft.threads, { workers = bad })
      assert.truthy(util.mentions(err, "workers"), util.text(err))
    end)
  end

  it("raises kind config for an init that is not a function", function()
    expect_error("config", weft.threads, { workers = 1, init = 42 })
  end)

  it("raises kind config for init_args that is not a list", function()
    expect_error("config", weft.threads, { workers = 1, init = function() end, init_args = "x" })
  end)

  it("raises kind config for an unknown option", function()
    local err = expect_error("config", weft.threads, { wrokers = 2 })
    assert.truthy(util.mentions(err, "wrokers"), util.text(err))
  end)
end)

describe("weft.executor", function()
  after_each(util.cleanup)

  it('makes an inline executor from "inline"', function()
    local ex = util.track(weft.executor("inline"))
    local f = ex:submit(function() return "inline" end)
    assert.is_true(f:done())
    assert.equal("inline", f:result())
    assert.equal(1, ex:stats().workers)
  end)

  it('makes a thread pool with one worker per online CPU from "threads"', function()
    local ex = util.track(weft.executor("threads"))
    assert.equal(util.online_cpus(), ex:stats().workers)
    assert.equal(6, ex:submit(function(x) return x * 2 end, 3):result())
  end)

  it('makes a thread pool of 8 from "threads:8"', function()
    local ex = util.track(weft.executor("threads:8"))
    assert.equal(8, ex:stats().workers)
    assert.equal("ok", ex:submit(function() return "ok" end):result())
  end)

  for _, bad in ipairs { "", "bogus", "threads:", "threads:0", "threads:-1",
                         "threads:abc", "threads:2.5", "threads:8x", "threads 8" } do
    it(("raises kind config for the spec %q"):format(bad), function()
      expect_error("config", weft.executor, bad)
    end)
  end

  it("raises kind config for a spec that is not a string", function()
    expect_error("config", weft.executor, 42)
  end)
end)
