-- Giving memory back after bursts (core.memory): a finished thread pool
-- releases its workers' malloc arenas and trims the heap; an idle pool
-- trims too. RSS itself is measured by scripts/bench/memory_burst.lua, not
-- here (it depends on the machine); these check the releases happen.
local weft = require "weft"
local core = require "weft.core"

-- Waits (on the condition, not a fixed time) until pred() holds.
local function wait_until(pred, what)
  local t0 = core.now()
  while not pred() do
    if core.now() - t0 > 30 then error("gave up waiting: " .. what, 2) end
    weft.sleep(0.005)
  end
end

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

describe("giving memory back", function()
  it("core.memory() counts trims and the worker arenas not given back yet", function()
    local m = core.memory()
    assert.is_true(math.type(m.trims) == "integer" and m.trims >= 0)
    assert.is_true(math.type(m.tokens) == "integer" and m.tokens >= 0)
  end)

  it("a collected executor gives back its workers' arenas and trims after its futures go", function()
    full_gc()
    local before = core.memory()
    local function burst()
      local ex = weft.threads{ workers = 2 }
      local futs = {}
      for i = 1, 2000 do futs[i] = ex:submit(function(x) return { x, tostring(x) } end, i) end
      for i = 1, 2000 do assert.equal(i, futs[i]:result()[1]) end
      ex:shutdown()
      -- both workers ran (shutdown joined them), each holding its token
      assert.equal(before.tokens + 2, core.memory().tokens)
    end
    burst()
    full_gc()   -- executor and futures collected: the pool is freed
    assert.equal(before.tokens, core.memory().tokens)
    local freed = core.memory().trims
    assert.is_true(freed > before.trims)
    full_gc()   -- the next collection ran the sentinel, which trims again (at most 50 ms later)
    wait_until(function() return core.memory().trims > freed end, "the trim after the collection")
  end)

  it("a shut-down executor still referenced gives its workers' arenas back when its futures go", function()
    full_gc()
    local before = core.memory()
    local ex <close> = weft.threads{ workers = 2 }
    local function burst()
      local futs = {}
      for i = 1, 2000 do futs[i] = ex:submit(function(x) return { x, tostring(x) } end, i) end
      for i = 1, 2000 do assert.equal(i, futs[i]:result()[1]) end
      ex:shutdown()
      assert.equal(before.tokens + 2, core.memory().tokens)
    end
    burst()
    full_gc()   -- the futures are collected; the executor is not
    assert.equal(before.tokens, core.memory().tokens)
    wait_until(function() return core.memory().trims > before.trims end, "the trim that follows")
    assert.equal(2000, ex:stats().completed)
  end)

  it("a pool that goes idle trims without being shut down", function()
    local ex <close> = weft.threads{ workers = 1 }
    assert.equal(1, ex:submit(function() return 1 end):result())
    local before = core.memory().trims
    local f = ex:submit(function() return string.rep("x", 100000) end)
    assert.equal(100000, #f:result())
    -- the worker goes idle after its task: it trims (or arms a trim)
    wait_until(function() return core.memory().trims > before end, "the idle trim")
  end)
end)
