-- Tasks and flows: task calls inside a flow body become submissions to the
-- run's executor, the run waits for everything it started and reports a
-- state, a gathered result and one record per task run.
--
-- Nothing here waits on time: a task that must still be running is held
-- on a gate (helpers/gate.lua), and "the run waited" is checked on the
-- futures' states once flow:run has returned.
local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local core = weft.core
local expect_error = util.expect_error

local double = weft.task { function(x) return x * 2 end, name = "double" }
local add = weft.task { function(a, b) return a + b end, name = "add" }
local fail = weft.task { function(msg) error(msg or "boom") end, name = "fail" }

-- A task that appends to a file and returns how many times it ran there.
local function bump(path)
  local f = assert(io.open(path, "a"))
  f:write("x")
  f:close()
  return #assert(io.open(path)):read("a")
end

describe("a task", function()
  local ex
  before_each(function() ex = util.threads { workers = 2 } end)
  after_each(util.cleanup)

  it("is a plain call outside a flow", function()
    local pair = weft.task { function(x) return x, x + 1 end }
    local a, b = pair(1)
    assert.equal(1, a)
    assert.equal(2, b)
  end)

  it("returns a future when called in a flow body", function()
    local seen
    local run = weft.flow(function()
      seen = double(21)
      return core.is_future(seen)
    end):run { executor = ex }
    assert.is_true(run.result)
    assert.equal(42, seen:result())
  end)

  it("is submitted to the run's executor", function()
    local before = ex:stats().completed
    local run = weft.flow(function() return double(1) end):run { executor = ex }
    assert.equal(2, run.result)
    assert.equal(before + 1, ex:stats().completed)
  end)

  it("carries the flow's name, and no name once the flow is over", function()
    local inside
    weft.flow { function() inside = double(1) end, name = "etl" }:run { executor = ex }
    assert.equal("etl", inside:info().flow)
    assert.is_nil(ex:submit(double, 1):info().flow)
  end)

  it("is a plain call again after a flow body raised", function()
    weft.flow(function() error("body failed") end):run { executor = ex }
    assert.equal(4, double(2))
    assert.is_nil(ex:submit(double, 1):info().flow)
  end)
end)

describe("a flow run", function()
  local ex
  before_each(function() ex = util.threads { workers = 2 } end)
  after_each(util.cleanup)

  it("passes its arguments to the body", function()
    local run = weft.flow(function(a, b) return add(a, b) end):run(2, 3, { executor = ex })
    assert.equal("completed", run.state)
    assert.equal(5, run.result)
  end)

  it("passes a trailing table that is not options to the body", function()
    local run = weft.flow(function(t) return t.executor end)
      :run({ executor = "not an option" , other = 1 }, { executor = ex })
    assert.equal("not an option", run.result)
  end)

  it("gathers the futures in the body's return value", function()
    local run = weft.flow(function()
      return { a = double(1), nested = { double(2), "plain" } }
    end):run { executor = ex }
    assert.same({ a = 2, nested = { 4, "plain" } }, run.result)
  end)

  it("passes futures between tasks as dependencies", function()
    local run = weft.flow(function()
      return add(double(3), double(double(1)))
    end):run { executor = ex }
    assert.equal(10, run.result)
    assert.equal(4, #run.tasks)
  end)

  it("records every task run in submission order with its details", function()
    local run = weft.flow(function()
      local a = double(1)
      return add(a, 1)
    end):run { executor = ex }
    assert.equal(2, #run.tasks)
    for i, name in ipairs { "double", "add" } do
      local r = run.tasks[i]
      assert.equal(name, r.name)
      assert.equal("completed", r.state)
      assert.equal(1, r.attempts)
      assert.matches("^thread %d+$", r.worker)
      assert.is_number(r.start)
      assert.is_true(r.start <= r.finish)
      assert.is_nil(r.error)
      assert.is_true(r.future:done())
    end
    assert.is_true(run.tasks[1].finish <= run.tasks[2].start)
  end)

  it("has a name, start and finish times", function()
    local before = core.now()
    local run = weft.flow { function() end, name = "timed" }:run { executor = ex }
    assert.equal("timed", run.name)
    assert.is_true(before <= run.started and run.started <= run.finished)
    assert.is_true(run.finished <= core.now())
  end)

  it("names a flow after where its function is defined by default", function()
    local fl = weft.flow(function() end)
    assert.matches("flow_spec%.lua:%d+$", fl.name)
  end)

  it("fails with the task's error when a task fails, and returns instead of raising", function()
    local run = weft.flow(function() return fail("bad row") end):run { executor = ex }
    assert.equal("failed", run.state)
    assert.is_true(weft.is(run.error, "task"))
    assert.truthy(util.mentions(run.error, "bad row"))
    local r = run.tasks[1]
    assert.equal("failed", r.state)
    assert.is_true(weft.is(r.error, "task"))
    assert.is_nil(run.result)
  end)

  it("fails dependents without running them, with kind dependency", function()
    local path = util.tmpname()
    local mark = weft.task { function(_, p) bump(p) end, name = "mark" }
    local run = weft.flow(function()
      mark(fail("upstream broke"), path)
    end):run { executor = ex }
    assert.equal("failed", run.state)
    local up, down = run.tasks[1], run.tasks[2]
    assert.equal("mark", down.name)
    assert.equal("failed", down.state)
    assert.is_true(weft.is(down.error, "dependency"))
    assert.equal(0, down.attempts)
    assert.is_false(util.exists(path))
    -- the run's error is the root cause, not what it caused
    assert.equal(up.error, run.error)
    assert.is_true(weft.is(run.error, "task"))
  end)

  it("waits for futures the body never awaited", function()
    local g <close> = gate.new()
    local hold = weft.task { function(h) h() return "held" end, name = "hold" }
    local run = weft.flow(function()
      hold(g.hold)
      g:wait_started()
      g:release()       -- the task is still to return when the body ends
    end):run { executor = ex }
    local r = run.tasks[1]
    assert.is_true(r.future:done())
    assert.equal("completed", r.state)
    assert.equal("held", r.future:result())
    assert.equal("completed", run.state)
  end)

  it("fails when a task it never awaited fails", function()
    local run = weft.flow(function()
      fail("nobody looked")
      return "fine"
    end):run { executor = ex }
    assert.equal("failed", run.state)
    assert.truthy(util.mentions(run.error, "nobody looked"))
    assert.equal("fine", run.result)
  end)

  it("fails when a task was cancelled", function()
    local upstream = util.future()
    local run = weft.flow(function()
      local f = double(upstream)
      assert(f:cancel())
    end):run { executor = ex }
    assert.equal("failed", run.state)
    assert.equal("cancelled", run.tasks[1].state)
    assert.is_true(weft.is(run.tasks[1].error, "cancelled"))
    assert.is_true(weft.is(run.error, "cancelled"))
  end)

  it("fails with the body's error, after its tasks finished", function()
    local run = weft.flow(function()
      double(1)
      error("body broke")
    end):run { executor = ex }
    assert.equal("failed", run.state)
    assert.truthy(util.mentions(run.error, "body broke"))
    assert.equal("completed", run.tasks[1].state)
  end)

  it("keeps the body's error over a task's", function()
    local run = weft.flow(function()
      fail("task error")
      error("body error")
    end):run { executor = ex }
    assert.truthy(util.mentions(run.error, "body error"))
    assert.equal("failed", run.tasks[1].state)
  end)
end)

describe("retries and timeouts in a flow", function()
  local ex
  before_each(function() ex = util.threads { workers = 2 } end)
  after_each(util.cleanup)

  it("re-run a task after per-attempt delays, counting attempts", function()
    local path = util.tmpname()
    local flaky = weft.task { function(p, count)
      local n = count(p)
      if n < 3 then error("attempt " .. n) end
      return n
    end, name = "flaky", retries = 3, retry_delay = { 0.02, 0.04 } }
    local run = weft.flow(function() return flaky(path, bump) end):run { executor = ex }
    assert.equal("completed", run.state)
    assert.equal(3, run.result)
    local r = run.tasks[1]
    assert.equal(3, r.attempts)
    assert.is_true(r.finish - r.start >= 0.06)   -- both delays were waited
  end)

  it("record the last error and every attempt when retries run out", function()
    local run = weft.flow(function()
      weft.task { function() error("always") end, retries = 2, retry_delay = 0 }()
    end):run { executor = ex }
    local r = run.tasks[1]
    assert.equal("failed", r.state)
    assert.equal(3, r.attempts)
    assert.truthy(util.mentions(r.error, "always"))
  end)

  it("retry a timed-out attempt until one succeeds", function()
    local path = util.tmpname()
    local slow_first = weft.task { function(p, count)
      if count(p) < 2 then while true do end end
      return "second"
    end, timeout = 0.05, retries = 2 }
    local run = weft.flow(function() return slow_first(path, bump) end):run { executor = ex }
    assert.equal("second", run.result)
    assert.equal(2, run.tasks[1].attempts)
  end)

  it("record kind timeout when every attempt timed out", function()
    local run = weft.flow(function()
      weft.task { function() while true do end end, timeout = 0.02, retries = 1 }()
    end):run { executor = ex }
    local r = run.tasks[1]
    assert.equal("failed", r.state)
    assert.equal(2, r.attempts)
    assert.is_true(weft.is(r.error, "timeout"))
    assert.is_true(weft.is(run.error, "timeout"))
  end)
end)

describe("task:map", function()
  local ex
  before_each(function() ex = util.threads { workers = 2 } end)
  after_each(util.cleanup)

  local function map_run(body)
    return weft.flow(body):run { executor = ex }
  end

  it("returns one future per item", function()
    local run = map_run(function()
      local fs = double:map { 1, 2, 3 }
      assert(#fs == 3 and core.is_future(fs[1]))
      return fs
    end)
    assert.same({ 2, 4, 6 }, run.result)
    assert.equal(3, #run.tasks)
  end)

  it("zips several lists", function()
    local run = map_run(function() return add:map({ 1, 2, 3 }, { 10, 20, 30 }) end)
    assert.same({ 11, 22, 33 }, run.result)
  end)

  it("gives a weft.unmapped argument whole to every call", function()
    local pick = weft.task { function(i, t) return t[i] end }
    local run = map_run(function()
      return pick:map({ 3, 1 }, weft.unmapped { "a", "b", "c" })
    end)
    assert.same({ "c", "a" }, run.result)
  end)

  it("maps over the list an upstream task returns", function()
    local range = weft.task { function(n) local t = {} for i = 1, n do t[i] = i end return t end }
    local run = map_run(function() return double:map(range(4)) end)
    assert.same({ 2, 4, 6, 8 }, run.result)
    assert.equal(5, #run.tasks)
  end)

  it("chains: a list of futures maps item by item as dependencies", function()
    local run = map_run(function() return add:map(double:map { 1, 2 }, { 100, 200 }) end)
    assert.same({ 102, 204 }, run.result)
  end)

  it("returns an empty list for empty lists", function()
    local run = map_run(function() return double:map {} end)
    assert.same({}, run.result)
    assert.equal(0, #run.tasks)
  end)

  it("rejects lists of different lengths, naming the lengths", function()
    local run = map_run(function() add:map({ 1, 2, 3 }, { 1, 2, 3, 4, 5 }) end)
    assert.is_true(weft.is(run.error, "config"))
    assert.truthy(util.mentions(run.error, "different lengths (3 and 5"))
    assert.equal(0, #run.tasks)
  end)

  it("rejects an argument that is neither a list nor unmapped, naming it", function()
    local run = map_run(function() add:map({ 1, 2 }, 10) end)
    assert.is_true(weft.is(run.error, "config"))
    assert.truthy(util.mentions(run.error, "argument 2"))
    assert.truthy(util.mentions(run.error, "weft.unmapped"))
  end)

  it("rejects a map with nothing to map over", function()
    local run = map_run(function() add:map(weft.unmapped(1), weft.unmapped(2)) end)
    assert.is_true(weft.is(run.error, "config"))
  end)

  it("fails with kind dependency when the upstream list failed", function()
    local run = map_run(function() double:map(fail("no list")) end)
    assert.is_true(weft.is(run.error, "dependency"))
    assert.truthy(util.mentions(run.error, "no list"))
  end)

  it("outside a flow raises kind config pointing to ex:map", function()
    local err = expect_error("config", double.map, double, { 1, 2 })
    assert.truthy(util.mentions(err, "ex:map"))
  end)
end)

describe("flows on each executor", function()
  after_each(util.cleanup)

  -- Six task runs: three doubles, two adds (2 + 4 + 6), one failure.
  local function pipeline()
    local xs = double:map { 1, 2, 3 }
    local total = add(add(xs[1], xs[2]), xs[3])
    local broken = fail("x")
    return { total = total, broken = broken }
  end

  local function check(run, worker_pattern)
    assert.equal("failed", run.state)                 -- the 'broken' task
    assert.is_nil(run.result)
    assert.equal(6, #run.tasks)
    assert.equal(12, run.tasks[5].future:result())
    for i = 1, 5 do
      assert.equal("completed", run.tasks[i].state)
      assert.matches(worker_pattern, run.tasks[i].worker)
    end
    assert.is_true(weft.is(run.tasks[6].error, "task"))
    assert.equal(run.tasks[6].error, run.error)
  end

  it("threads", function()
    check(weft.flow(pipeline):run { executor = util.threads { workers = 2 } }, "^thread %d+$")
  end)

  it("processes", function()
    local ex = util.track(weft.processes { workers = 2 })
    check(weft.flow(pipeline):run { executor = ex }, "^process %d+$")
  end)

  it("inline", function()
    check(weft.flow(pipeline):run { executor = util.track(weft.inline()) }, "^inline$")
  end)

  it("a spec string, built for the run and shut down after it", function()
    local run = weft.flow(pipeline):run { executor = "inline" }
    check(run, "^inline$")
  end)

  it("a task that calls another task calls it, on every executor", function()
    local inner = weft.task { function(x) return x + 1 end, name = "inner" }
    local outer = weft.task { function(x) return inner(x) * 2 end, name = "outer" }
    local both = weft.flow { function() return outer(1) end, name = "both" }
    for _, ex in ipairs { util.track(weft.inline()), util.threads { workers = 1 },
                          util.track(weft.processes { workers = 1 }) } do
      local run = both:run { executor = ex }
      assert.equal("completed", run.state, tostring(run.error))
      assert.equal(4, run.result)
      assert.equal(1, #run.tasks)              -- inner ran inside outer's run
    end
  end)
end)

describe("nested flows", function()
  local ex
  before_each(function() ex = util.threads { workers = 2 } end)
  after_each(util.cleanup)

  it("run a subflow as its own run, inside the parent's", function()
    local inner_run, after
    local inner = weft.flow { function(x) return double(x) end, name = "inner" }
    local outer = weft.flow { function()
      inner_run = inner:run(5)
      after = double(inner_run.result)
      return after
    end, name = "outer" }
    local run = outer:run { executor = ex }
    assert.equal(20, run.result)
    assert.equal("completed", inner_run.state)
    assert.equal(10, inner_run.result)
    assert.equal(1, #inner_run.tasks)
    assert.equal(1, #run.tasks)
    assert.equal(run, inner_run.parent)
    assert.is_nil(run.parent)
    assert.equal("inner", inner_run.tasks[1].future:info().flow)
    assert.equal("outer", after:info().flow)   -- the label came back
  end)

  it("use the parent's executor unless given one", function()
    local inline = util.track(weft.inline())
    local inner = weft.flow(function() double(1) end)
    local own, inherited
    weft.flow(function()
      inherited = inner:run()
      own = inner:run { executor = inline }
    end):run { executor = ex }
    assert.matches("^thread", inherited.tasks[1].worker)
    assert.equal("inline", own.tasks[1].worker)
  end)

  it("report a failed subflow to the parent without failing it", function()
    local inner = weft.flow(function() fail("inner") end)
    local run = weft.flow(function() return inner:run().state end):run { executor = ex }
    assert.equal("completed", run.state)
    assert.equal("failed", run.result)
  end)
end)

describe("bad flow input", function()
  after_each(util.cleanup)

  it("raises kind config for a body that is not a function", function()
    expect_error("config", weft.flow, "not a function")
    expect_error("config", weft.flow, { name = "no body" })
    expect_error("config", weft.flow, nil)
  end)

  it("raises kind config for a bad name or an unknown option", function()
    local fn = function() end
    expect_error("config", weft.flow, { fn, name = 3 })
    local err = expect_error("config", weft.flow, { fn, executor = "threads" })
    assert.truthy(util.mentions(err, "executor"))
  end)

  it("raises kind config for a task that is not a function", function()
    expect_error("config", weft.task, { "nope" })
  end)

  it("raises kind config for a bad executor option of run", function()
    local fl = weft.flow(function() end)
    expect_error("config", fl.run, fl, { executor = 5 })
    expect_error("config", fl.run, fl, { executor = "bogus:1" })
  end)

  it("raises kind config for run called without a colon", function()
    local fl = weft.flow(function() end)
    expect_error("config", fl.run)
  end)
end)

describe("weft.observe_runs", function()
  local ex
  before_each(function() ex = util.threads { workers = 2 } end)
  after_each(util.cleanup)

  it("tells start and finish of every run, subflows included", function()
    local events = {}
    finally(weft.observe_runs(function(event, run)
      events[#events + 1] = event .. " " .. run.name .. " " .. #run.tasks
                            .. " " .. tostring(run.state)
    end))
    local inner = weft.flow { function() double(1) end, name = "inner" }
    weft.flow { function() inner:run() double(2) end, name = "outer" }:run { executor = ex }
    assert.same({ "start outer 0 nil", "start inner 0 nil", "finish inner 1 completed",
                  "finish outer 1 completed" }, events)
  end)

  it("stops telling once unobserved", function()
    local count = 0
    local unobserve = weft.observe_runs(function() count = count + 1 end)
    weft.flow(function() end):run { executor = ex }
    unobserve()
    unobserve()   -- twice is harmless
    weft.flow(function() end):run { executor = ex }
    assert.equal(2, count)
  end)

  it("ignores an observer's error", function()
    finally(weft.observe_runs(function() error("observer broke") end))
    local run = weft.flow(function() return double(1) end):run { executor = ex }
    assert.equal("completed", run.state)
  end)

  it("raises kind config for an observer that is not a function", function()
    expect_error("config", weft.observe_runs, "print")
  end)
end)

describe("the default executor", function()
  after_each(function()
    weft.set_default_executor(nil)
    util.cleanup()
  end)

  it("is built once and runs flows given no executor", function()
    local ex = weft.default_executor()
    assert.equal(ex, weft.default_executor())
    local before = ex:stats().completed
    local run = weft.flow(function() return double(4) end):run()
    assert.equal(8, run.result)
    assert.equal(before + 1, ex:stats().completed)
  end)

  it("follows set_default_executor with a spec", function()
    weft.set_default_executor("inline")
    local run = weft.flow(function() return double(1) end):run()
    assert.equal("inline", run.tasks[1].worker)
    weft.set_default_executor("threads:1")
    assert.equal(1, weft.default_executor():stats().workers)
  end)

  it("follows set_default_executor with an executor", function()
    local ex = util.threads { workers = 1 }
    weft.set_default_executor(ex)
    assert.equal(ex, weft.default_executor())
  end)

  it("rejects a bad spec at once and keeps the previous default", function()
    weft.set_default_executor("inline")
    for _, bad in ipairs { "threads:0", "threads:x", "fibres", 42, true } do
      expect_error("config", weft.set_default_executor, bad)
    end
    assert.equal("inline", weft.flow(function() double(1) end):run().tasks[1].worker)
  end)

  it("shuts down the default it replaces", function()
    local old = weft.default_executor()
    weft.set_default_executor("inline")
    expect_error("shutdown", old.submit, old, double, 1)
  end)

  it("comes from WEFT_EXECUTOR", function()
    local out = util.run_lua([[
      local weft = require "weft"
      print(weft.default_executor():stats().workers)
      print(weft.flow(function() return weft.task(function() end)() end):run().tasks[1].worker)
    ]], { WEFT_EXECUTOR = "threads:3" })
    assert.matches("^3\nthread %d+\n$", out)
  end)

  it("names WEFT_EXECUTOR when it is bad", function()
    local out = util.run_lua([[
      local weft = require "weft"
      local ok, err = pcall(weft.default_executor)
      print(weft.is(err, "config"), tostring(err))
    ]], { WEFT_EXECUTOR = "nonsense" })
    assert.matches("^true", out)
    assert.truthy(out:find("WEFT_EXECUTOR", 1, true))
  end)
end)

describe("an interrupt (Ctrl-C in the weft program)", function()
  after_each(util.cleanup)

  -- The script: an outer flow with a task it never awaits and a subflow
  -- that waits on a task; both tasks hold on the spec's gate (the same
  -- protocol as helpers/gate.lua, from the two FIFO paths).  It writes
  -- what the observers saw and what flow:run raised to `report`.
  local script = [[
    local weft = require "weft"
    local started, release, report = ...
    local hold = weft.task { name = "hold", function(s, r)
      local w = io.open(s, "w") w:write("started\n") w:close()
      local f = io.open(r, "r") if f then f:close() end
    end }
    local quick = weft.task { name = "quick", function() return 1 end }
    local lines = {}
    weft.observe_runs(function(event, run)
      if event ~= "finish" then return end
      local states = {}
      for _, t in ipairs(run.tasks) do states[#states + 1] = t.name .. "=" .. t.state end
      lines[#lines + 1] = table.concat({ run.name, run.state, table.concat(states, ","),
                                         tostring(run.error and run.error.message) }, " ")
    end)
    local inner = weft.flow { name = "inner", function()
      return hold(started, release):result()
    end }
    local outer = weft.flow { name = "outer", function()
      quick():result()
      hold(started, release)
      inner:run()
    end }
    local ok, err = pcall(outer.run, outer, { executor = weft.threads { workers = 2 } })
    lines[#lines + 1] = "raised " .. tostring(weft.is(err, "cancelled")) .. " "
                        .. tostring(err and err.message)
    local f = io.open(report, "w")
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
  ]]

  it("cancels the run's unfinished tasks, reports every run, and re-raises", function()
    local build = assert(os.getenv("WEFT_BUILD_DIR"), "run through scripts/test")
    local g <close> = gate.new()
    local path, report = util.tmpname() .. ".lua", util.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    -- Once both tasks hold, Ctrl-C; then wait for the program to end (a
    -- program still there after two minutes is a hang: killed, and the
    -- report is missing).
    local ok = os.execute(table.concat({
      build .. "/weft/weft run " .. path, g.started_path, g.release_path, report,
      "> /dev/null 2>&1 & pid=$!;",
      "timeout 120 dd if=" .. g.started_path .. " bs=1 count=16 status=none > /dev/null;",
      "kill -INT $pid;",
      "(sleep 120; kill -KILL $pid) > /dev/null 2>&1 & dog=$!;",
      "wait $pid; kill $dog; true" }, " "))
    os.remove(path)
    assert.is_true(ok)
    local lines = {}
    for line in io.lines(report) do lines[#lines + 1] = line end
    assert.same({
      "inner failed hold=cancelled interrupted",
      "outer failed quick=completed,hold=cancelled interrupted",
      "raised true interrupted",
    }, lines)
  end)
end)
