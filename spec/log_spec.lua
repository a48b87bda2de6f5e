-- weft.log records from tasks on every executor, their context (flow,
-- task, attempt, worker), sinks and levels; f:info(); core.set_ticker;
-- core.executors.

local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local core = weft.core

-- Collects the records the sink gets.
local function collect()
  local got = {}
  weft.log.set_sink(function(r) got[#got + 1] = r end)
  return got
end

local function say(fmt, ...)
  weft.log.info(fmt, ...)
  return true
end

describe("weft.log", function()
  local level
  before_each(function() level = weft.log.level() end)
  after_each(function()
    weft.log.set_sink(nil)
    weft.log.set_level(level)
    core.set_flow(nil)
    util.cleanup()
  end)

  it("delivers a thread task's record with its task, flow, attempt and worker", function()
    local got = collect()
    local ex = util.threads { workers = 2 }
    core.set_flow("etl")
    local t = weft.task { function(n) return say("loaded %d rows", n) end, name = "extract" }
    local before = core.wallclock()
    ex:submit(t, 3):result()
    assert.equal(1, #got)
    local r = got[1]
    assert.equal("loaded 3 rows", r.message)
    assert.equal("info", r.level)
    assert.equal("etl", r.flow)
    assert.equal("extract", r.task)
    assert.equal(1, r.attempt)
    assert.truthy(r.worker:match("^thread [12]$"), r.worker)
    assert.is_true(r.time >= before - 1 and r.time <= core.wallclock() + 1)
  end)

  it("delivers a process task's records in order, naming the worker process", function()
    local got = collect()
    local ex = util.track(weft.processes { workers = 1 })
    local t = weft.task { function(n)
      for i = 1, n do weft.log.warn("line %d", i) end
      return true
    end, name = "chatty" }
    ex:submit(t, 500):result()
    assert.equal(500, #got)
    for i = 1, 500 do assert.equal("line " .. i, got[i].message) end
    assert.equal("warn", got[1].level)
    assert.equal("chatty", got[1].task)
    assert.equal("process " .. ex:stats().pids[1], got[1].worker)
  end)

  it("delivers an inline task's record before submit returns", function()
    local got = collect()
    local ex = weft.inline()
    ex:submit(weft.task { say, name = "now" }, "x")
    assert.equal(1, #got)
    assert.equal("inline", got[1].worker)
    assert.equal("now", got[1].task)
  end)

  it("names each attempt of a retried task", function()
    local got = collect()
    local marker = util.tmpname()
    local ex = util.threads { workers = 1 }
    local t = weft.task { function(path)
      local f = io.open(path)
      weft.log.info("attempt starts")
      if not f then
        io.open(path, "w"):close()
        error("first attempt fails")
      end
      f:close()
      return "ok"
    end, name = "flaky", retries = 2 }
    assert.equal("ok", ex:submit(t, marker):result())
    assert.equal(2, #got)
    assert.equal(1, got[1].attempt)
    assert.equal(2, got[2].attempt)
  end)

  it("makes a record in the submitting state itself at once, under its flow", function()
    local got = collect()
    assert.is_nil(core.set_flow("report"))
    weft.log.error("disk %s is full", "sda")
    assert.equal("report", core.set_flow(nil))
    assert.equal(1, #got)
    assert.same("disk sda is full", got[1].message)
    assert.equal("report", got[1].flow)
    assert.is_nil(got[1].task)
    assert.is_nil(got[1].worker)
  end)

  it("works as a logger object (log:info) too", function()
    local got = collect()
    weft.log:info("as a method")
    assert.equal("as a method", got[1].message)
  end)

  it("delivers records while the submitter waits, before the task ends", function()
    local got = collect()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local f = ex:submit(function(hold)
      weft.log.info("halfway")
      hold()
      return "end"
    end, g.hold)
    local deadline = core.now() + 60
    while #got == 0 and core.now() < deadline do weft.wait({ f }, { timeout = 0.05 }) end
    assert.equal("halfway", got[1] and got[1].message)
    assert.is_false(f:done())
    g:release()
    assert.equal("end", f:result())
  end)

  it("delivers a task's records before its done-callbacks, even when it ends mid-dispatch", function()
    -- b logs and ends while a's callback runs, after that dispatch took
    -- the records queued so far: b's record still comes before b's callback.
    local got = collect()
    local ex = util.threads { workers = 2 }
    local ga, gb = gate.new(), gate.new()
    local a = ex:submit(function(hold) hold() return "a" end, ga.hold)
    local b = ex:submit(function(hold)
      hold()
      weft.log.info("from b")
      return "b"
    end, gb.hold)
    local seen
    a:add_done_callback(function()
      gb:release()
      local deadline = core.now() + 60
      while not b:done() and core.now() < deadline do end
    end)
    b:add_done_callback(function() seen = #got end)
    ga:release()
    weft.wait({ a, b })
    assert.is_true(b:done())
    assert.equal(1, seen)
  end)

  it("drops records below the submitting state's level, from any executor", function()
    local got = collect()
    weft.log.set_level("warn")
    local ex = util.threads { workers = 1 }
    local px = util.track(weft.processes { workers = 1 })
    local fn = function()
      weft.log.debug("d")
      weft.log.info("i")
      weft.log.warn("w")
      weft.log.error("e")
      return true
    end
    ex:submit(fn):result()
    px:submit(fn):result()
    fn()
    local messages = {}
    for _, r in ipairs(got) do messages[#messages + 1] = r.message end
    assert.same({ "w", "e", "w", "e", "w", "e" }, messages)
    weft.log.set_level("debug")   -- reaches workers with their next task
    ex:submit(fn):result()
    px:submit(fn):result()
    assert.equal(6 + 4 + 4, #got)
    assert.equal("d", got[7].message)
    assert.equal("d", got[11].message)
    assert.truthy(got[11].worker:match("^process "))
  end)

  it("rejects an unknown level with a config error", function()
    local err = util.expect_error("config", weft.log.set_level, "loud")
    assert.truthy(util.mentions(err, "debug, info, warn or error"))
  end)

  it("writes a line on stderr without a sink, and survives a failing sink", function()
    local out, ok = util.run_lua([[
      local weft = require "weft"
      local ex = weft.threads { workers = 1 }
      weft.core.set_flow("nightly")
      ex:submit(weft.task { function() weft.log.warn("from a %s", "task") return 1 end,
                            name = "job" }):result()
      weft.log.set_sink(function() error("sink broke") end)
      weft.log.info("still here")
    ]])
    assert.is_true(ok, out)
    assert.truthy(out:match("%d%d:%d%d:%d%d WARN  %[nightly/job thread 1%] from a task"), out)
    assert.truthy(out:find("sink broke", 1, true), out)
    assert.truthy(out:find("still here", 1, true), out)
  end)

  it("writes the records left when the state closes", function()
    local out, ok = util.run_lua([[
      local weft = require "weft"
      local ex = weft.threads { workers = 1 }
      local f = ex:submit(function() weft.log.info("late record") return 1 end)
      while f:state() ~= "finished" do end   -- never waits: nothing delivered yet
      os.exit(0, true)                       -- lua_close
    ]])
    assert.is_true(ok, out)
    assert.truthy(out:find("late record", 1, true), out)
  end)
end)

describe("f:info()", function()
  after_each(function()
    core.set_flow(nil)
    util.cleanup()
  end)

  it("tells a task's name, flow, attempts, worker and times", function()
    local ex = util.threads { workers = 1 }
    core.set_flow("daily")
    local f = ex:submit(weft.task { function() return 1 end, name = "one" })
    f:result()
    local info = f:info()
    assert.equal("one", info.task)
    assert.equal("daily", info.flow)
    assert.equal(1, info.attempts)
    assert.equal("thread 1", info.worker)
    assert.is_true(info.submitted <= info.started and info.started <= info.finished)
    assert.is_true(info.finished <= core.now())
  end)

  it("knows the worker process of a process task", function()
    local ex = util.track(weft.processes { workers = 1 })
    local f = ex:submit(weft.task { function() return 1 end, name = "p" })
    f:result()
    local info = f:info()
    assert.equal("process " .. ex:stats().pids[1], info.worker)
    assert.is_true(info.submitted <= info.started and info.started <= info.finished)
  end)

  it("has no start or finish while a task waits, and a finish once cancelled", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local first = ex:submit(function(hold) hold() end, g.hold)
    g:wait_started()
    local f = ex:submit(weft.task { function() end, name = "later" })
    local info = f:info()
    assert.is_nil(info.started)
    assert.is_nil(info.finished)
    assert.is_true(f:cancel())
    assert.is_number(f:info().finished)
    assert.is_nil(f:info().started)
    g:release()
    first:result()
  end)

  it("knows where and since when a process task runs, and keeps it when forced to stop", function()
    local ex = util.track(weft.processes { workers = 1 })
    local g = gate.new()
    local f = ex:submit(weft.task { function(arrive) arrive() while true do end end,
                                    name = "spin" }, g.arrive)
    g:wait_started()
    local deadline = core.now() + 60
    while f:state() ~= "running" and core.now() < deadline do weft.wait({ f }, { timeout = 0.01 }) end
    local info = f:info()
    assert.equal("process " .. ex:stats().pids[1], info.worker)
    assert.is_true(info.started >= info.submitted and info.started <= core.now())
    assert.is_nil(info.finished)
    assert.is_true(f:cancel { force = true })
    info = f:info()
    assert.equal("process", info.worker:match("^%a+"))
    assert.is_true(info.started <= info.finished)
  end)

  it("tells only the attempts of a plain function's future", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(function() return 1 end)
    f:result()
    assert.same({ attempts = 1 }, f:info())
  end)
end)

describe("core.set_ticker", function()
  after_each(function()
    core.set_ticker(nil)
    util.cleanup()
  end)

  it("runs while the state waits on a future", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local ticks = 0
    local f = ex:submit(function(hold) hold() return "done" end, g.hold)
    core.set_ticker(function()
      ticks = ticks + 1
      if ticks == 3 then g:release() end
    end, 0.01)
    assert.equal("done", f:result())
    assert.is_true(ticks >= 3)
  end)

  it("reports an error in the ticker and goes on", function()
    local ex = util.threads { workers = 1 }
    local g = gate.new()
    local ticks, reported = 0, {}
    weft.log.set_sink(function(r) reported[#reported + 1] = r end)
    local f = ex:submit(function(hold) hold() return "done" end, g.hold)
    core.set_ticker(function()
      ticks = ticks + 1
      if ticks == 3 then g:release() end
      error("tick failed")
    end, 0.01)
    assert.equal("done", f:result())
    weft.log.set_sink(nil)
    assert.is_true(ticks >= 3)
    assert.equal("error", reported[1].level)
    assert.truthy(reported[1].message:find("tick failed", 1, true), reported[1].message)
  end)

  it("rejects a tiny interval", function()
    assert.has_error(function() core.set_ticker(function() end, 0) end)
  end)
end)

describe("core.executors", function()
  after_each(util.cleanup)

  it("lists the executors of this state", function()
    local a, b = util.threads { workers = 1 }, weft.inline()
    local found = {}
    for _, ex in ipairs(core.executors()) do found[ex] = true end
    assert.is_true(found[a])
    assert.is_true(found[b])
  end)
end)
