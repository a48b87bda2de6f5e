-- weft.threads{}: the thread pool executor, submit, init, shutdown, stats.
local weft = require "weft"
local gate = require "helpers.gate"
local util = require "helpers.util"

local expect_error = util.expect_error

describe("weft.threads", function()
  after_each(util.cleanup)

  describe("submit", function()
    it("runs a Lua function on a worker and returns its value", function()
      local ex = util.threads { workers = 2 }
      local f = ex:submit(function(a, b) return a + b end, 2, 40)
      assert.equal(42, f:result())
    end)

    it("returns a future without waiting for the task", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return "later" end, g.hold)
      assert.is_false(f:done())
      g:release()
      assert.equal("later", f:result())
    end)

    it("runs tasks on separate workers at the same time", function()
      local ex = util.threads { workers = 2 }
      local g = gate.new()
      local a = ex:submit(function(hold) return hold() end, g.hold)
      local b = ex:submit(function(hold) return hold() end, g.hold)
      -- both reach the gate before either is released: two workers at once
      g:wait_started(2)
      assert.is_true(a:running())
      assert.is_true(b:running())
      g:release()
      assert.equal("go", a:result())
      assert.equal("go", b:result())
    end)

    it("returns every value, nil holes included", function()
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return nil, 2, nil, nil end)
      assert.equal(4, select("#", f:result()))
      local a, b, c, d = f:result()
      assert.is_nil(a)
      assert.equal(2, b)
      assert.is_nil(c)
      assert.is_nil(d)
    end)

    it("returns no values when the task returns none", function()
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() end)
      assert.equal(0, select("#", f:result()))
    end)

    it("passes every argument, nil holes included", function()
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function(...) return select("#", ...), ... end, nil, 2, nil)
      local n, a, b, c = f:result()
      assert.equal(3, n)
      assert.is_nil(a)
      assert.equal(2, b)
      assert.is_nil(c)
    end)

    it("runs standard library C functions as tasks", function()
      local ex = util.threads { workers = 1 }
      assert.equal("ababab", ex:submit(string.rep, "ab", 3):result())
      assert.equal(9, ex:submit(math.max, 3, 9, 4):result())
      assert.equal("07|x", ex:submit(string.format, "%02d|%s", 7, "x"):result())
    end)

    it("runs many tasks on a small pool", function()
      local ex = util.threads { workers = 2 }
      local fs = {}
      for i = 1, 200 do
        fs[i] = ex:submit(function(x) return x * 2 end, i)
      end
      for i = 1, 200 do assert.equal(i * 2, fs[i]:result()) end
    end)

    it("copies arguments: the task cannot change the caller's table", function()
      local ex = util.threads { workers = 1 }
      local t = { n = 1 }
      local f = ex:submit(function(x) x.n = 2; return x end, t)
      assert.equal(2, f:result().n)
      assert.equal(1, t.n)
    end)
  end)

  describe("workers", function()
    it("defaults to the number of online CPUs", function()
      local ex = util.threads {}
      assert.equal(util.online_cpus(), ex:stats().workers)
    end)

    it("uses the number given", function()
      local ex = util.threads { workers = 3 }
      assert.equal(3, ex:stats().workers)
    end)

    it("keeps separate globals in every worker", function()
      local ex = util.threads { workers = 2 }
      local g = gate.new()
      -- two tasks, held together, so each runs on its own worker
      local function set_and_hold(hold, value)
        SPEC_WORKER_VALUE = value
        hold()
        return SPEC_WORKER_VALUE
      end
      local a = ex:submit(set_and_hold, g.hold, "a")
      local b = ex:submit(set_and_hold, g.hold, "b")
      g:wait_started(2)
      g:release()
      assert.equal("a", a:result())
      assert.equal("b", b:result())
    end)
  end)

  describe("init", function()
    it("runs in the worker before its first task", function()
      local ex = util.threads {
        workers = 1,
        init = function() SPEC_READY = "ready" end,
      }
      assert.equal("ready", ex:submit(function() return SPEC_READY end):result())
    end)

    it("receives init_args", function()
      local ex = util.threads {
        workers = 1,
        init = function(a, b, c) SPEC_INIT_ARGS = { a, b, c } end,
        init_args = { "x", 2, { nested = true } },
      }
      local got = ex:submit(function() return SPEC_INIT_ARGS end):result()
      assert.same({ "x", 2, { nested = true } }, got)
    end)

    it("runs once in every worker", function()
      local ex = util.threads {
        workers = 2,
        init = function() SPEC_INIT_COUNT = (SPEC_INIT_COUNT or 0) + 1 end,
      }
      local g = gate.new()
      local function count_after_hold(hold)
        hold()
        return SPEC_INIT_COUNT
      end
      local fs = { ex:submit(count_after_hold, g.hold), ex:submit(count_after_hold, g.hold) }
      g:wait_started(2)
      g:release()
      for i = 3, 10 do
        fs[i] = ex:submit(function() return SPEC_INIT_COUNT end)
      end
      for i = 1, 10 do assert.equal(1, fs[i]:result()) end
    end)

    it("fails the tasks with kind broken, caused by the init error", function()
      local ex = util.threads {
        workers = 1,
        init = function() error("init-exploded") end,
      }
      local f = ex:submit(function() return 1 end)
      local err = expect_error("broken", f.result, f)
      assert.is_not_nil(err.cause)
      assert.truthy(util.mentions(err.cause, "init-exploded"), util.text(err))
      assert.equal("failed", f:state())
    end)

    it("never hangs a pool whose init fails", function()
      local ex = util.threads {
        workers = 2,
        init = function() error("init-exploded") end,
      }
      local fs = {}
      for i = 1, 5 do fs[i] = ex:submit(function() return i end) end
      local done, not_done = weft.wait(fs)
      assert.equal(5, #done)
      assert.equal(0, #not_done)
      for i = 1, 5 do assert.is_true(weft.is(fs[i]:exception(), "broken")) end
      ex:shutdown { wait = true }
      assert.equal(5, ex:stats().failed)
    end)
  end)

  describe("name", function()
    it("is accepted and the pool works", function()
      local ex = util.threads { workers = 1, name = "crunchers" }
      assert.equal("ok", ex:submit(function() return "ok" end):result())
    end)
  end)

  describe("shutdown", function()
    it("makes submit raise kind shutdown", function()
      local ex = util.threads { workers = 1 }
      ex:shutdown()
      local err = expect_error("shutdown", ex.submit, ex, function() return 1 end)
      assert.is_string(err.message)
    end)

    it("makes map raise kind shutdown at the call", function()
      local ex = util.threads { workers = 1 }
      ex:shutdown { wait = true }
      expect_error("shutdown", ex.map, ex, function(x) return x end, { 1, 2 })
    end)

    it("is idempotent", function()
      local ex = util.threads { workers = 1 }
      ex:shutdown { wait = true }
      assert.has_no.errors(function()
        ex:shutdown { wait = true }
        ex:shutdown { wait = false }
        ex:shutdown()
      end)
      expect_error("shutdown", ex.submit, ex, function() end)
    end)

    it("with wait = true returns once every accepted task is done", function()
      local ex = util.threads { workers = 1 }
      local fs = {}
      for i = 1, 5 do
        fs[i] = ex:submit(function(x)
          local s = 0
          for k = 1, 10000 do s = s + k end
          return x + s
        end, i)
      end
      ex:shutdown { wait = true }
      for i = 1, 5 do
        assert.is_true(fs[i]:done())
        assert.equal(i + 50005000, fs[i]:result())
      end
    end)

    it("with wait = false returns while a task still runs, which then finishes", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return "finished anyway" end, g.hold)
      g:wait_started()
      ex:shutdown { wait = false }
      assert.is_false(f:done())
      expect_error("shutdown", ex.submit, ex, function() end)
      g:release()
      assert.equal("finished anyway", f:result())
      ex:shutdown { wait = true }
    end)

    it("with cancel_futures = true cancels the tasks not started", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local running = ex:submit(function(hold) hold(); return "ran" end, g.hold)
      g:wait_started()
      local queued = {
        ex:submit(function() return 1 end),
        ex:submit(function() return 2 end),
      }
      ex:shutdown { wait = false, cancel_futures = true }
      assert.equal("cancelled", queued[1]:state())
      assert.equal("cancelled", queued[2]:state())
      assert.is_false(running:cancelled())
      g:release()
      assert.equal("ran", running:result())
      ex:shutdown { wait = true }
      local s = ex:stats()
      assert.equal(2, s.cancelled)
      assert.equal(1, s.completed)
    end)

    it("with cancel_futures = false runs the tasks not started", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local first = ex:submit(function(hold) hold(); return 0 end, g.hold)
      g:wait_started()
      local rest = {}
      for i = 1, 3 do rest[i] = ex:submit(function(x) return x end, i) end
      ex:shutdown { wait = false, cancel_futures = false }
      g:release()
      ex:shutdown { wait = true }
      assert.equal(0, first:result())
      for i = 1, 3 do assert.equal(i, rest[i]:result()) end
    end)
  end)

  describe("as a to-be-closed variable", function()
    it("shuts down with wait = true at scope exit", function()
      local outer, fs = nil, {}
      do
        local ex <close> = weft.threads { workers = 2 }
        outer = ex
        for i = 1, 4 do fs[i] = ex:submit(function(x) return x + 1 end, i) end
      end
      for i = 1, 4 do
        assert.is_true(fs[i]:done())
        assert.equal(i + 1, fs[i]:result())
      end
      expect_error("shutdown", outer.submit, outer, function() end)
    end)

    it("shuts down when the scope is left by an error", function()
      local outer, f
      local ok = pcall(function()
        local ex <close> = weft.threads { workers = 1 }
        outer = ex
        f = ex:submit(function() return "done" end)
        error("leaving the scope")
      end)
      assert.is_false(ok)
      assert.is_true(f:done())
      expect_error("shutdown", outer.submit, outer, function() end)
    end)
  end)

  describe("collected while its tasks run", function()
    it("does not wait for them in __gc; they still finish", function()
      local g = gate.new()
      local f
      do
        local ex = weft.threads { workers = 1 }
        f = ex:submit(function(hold) hold() return "done" end, g.hold)
      end
      g:wait_started()
      collectgarbage()     -- a __gc that waited would hang here: the gate is shut
      collectgarbage()
      g:release()
      assert.equal("done", f:result())
    end)

    it("is waited for when the state closes", function()
      local marker = util.tmpname()
      local out, ok = util.run_lua(([[
        local weft = require "weft"
        weft.threads { workers = 1 }:submit(function(path)
          local t = os.clock() + 0.2
          while os.clock() < t do end
          io.open(path, "w"):close()
        end, %q)
        collectgarbage()
        collectgarbage()
      ]]):format(marker))
      assert.is_true(ok, out)
      assert.is_true(util.exists(marker))
    end)
  end)

  describe("stats", function()
    it("has every field, all zero on a new pool", function()
      local ex = util.threads { workers = 2 }
      local s = ex:stats()
      assert.equal(2, s.workers)
      for _, k in ipairs { "busy", "queued", "completed", "failed", "cancelled", "timed_out" } do
        assert.equal(0, s[k], k)
      end
    end)

    it("counts busy workers and queued tasks", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local running = ex:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local waiting = { ex:submit(function() end), ex:submit(function() end) }
      local s = ex:stats()
      assert.equal(1, s.busy)
      assert.equal(2, s.queued)
      g:release()
      running:result()
      weft.wait(waiting)
    end)

    it("counts completed, failed and cancelled tasks", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local blocker = ex:submit(function(hold) hold() end, g.hold)
      g:wait_started()
      local gone = ex:submit(function() end)
      gone:cancel()
      local fs = {
        ex:submit(function() return 1 end),
        ex:submit(function() error("no") end),
        ex:submit(function() error("nope") end),
      }
      g:release()
      blocker:result()
      weft.wait(fs)
      ex:shutdown { wait = true }
      local s = ex:stats()
      assert.equal(2, s.completed)
      assert.equal(2, s.failed)
      assert.equal(1, s.cancelled)
      assert.equal(0, s.timed_out)
      assert.equal(0, s.busy)
      assert.equal(0, s.queued)
    end)
  end)

  describe("results that cannot be copied back", function()
    it("fail the future with kind serialization when a task returns userdata", function()
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return io.stdout end)
      local err = expect_error("serialization", f.result, f)
      assert.truthy(util.mentions(err, "userdata"), util.text(err))
      assert.equal("failed", f:state())
    end)

    it("fail the future with kind serialization when a task returns a coroutine", function()
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return 1, coroutine.create(function() end) end)
      expect_error("serialization", f.result, f)
    end)

    it("leave the worker alive for the next task", function()
      local ex = util.threads { workers = 1 }
      local bad = ex:submit(function() return { handle = io.stderr } end)
      assert.is_true(weft.is(bad:exception(), "serialization"))
      assert.equal("next", ex:submit(function() return "next" end):result())
    end)

    it("fail the future, not the worker, when the error value cannot be copied", function()
      local ex = util.threads { workers = 1 }
      local bad = ex:submit(function() error(io.stdout) end)
      local e = bad:exception()
      assert.is_true(weft.is(e, "task") or weft.is(e, "serialization"), util.text(e))
      assert.equal("failed", bad:state())
      assert.equal("next", ex:submit(function() return "next" end):result())
    end)
  end)
end)

describe("Ctrl-C", function()
  -- A child lua5.4 waits on something that never finishes; once it says so
  -- (through a FIFO: an event, not a sleep) the shell sends SIGINT.  lua.c
  -- turns SIGINT into a hook; the wait must notice it and let it raise.
  local function interrupted_while(waiting_code)
    local dir = util.tmpname()
    assert(os.execute("mkdir " .. dir .. " && mkfifo " .. dir .. "/ready"))
    local script = dir .. "/child.lua"
    local f = assert(io.open(script, "w"))
    f:write(("package.path = %q\npackage.cpath = %q\n"):format(package.path, package.cpath))
    f:write(([[
      local weft = require "weft"
      local ex = weft.threads { workers = 1 }
      local never = weft.future()
      local ok, err = pcall(function()
        -- announce from inside the protected call: wherever SIGINT lands
        -- from here on, the error it raises is caught below
        local ready = assert(io.open(%q, "w"))
        ready:write("ready\n")
        ready:close()
        %s
      end)
      print("AFTER", ok, tostring(err))
      never:set_result(1)
      ex:shutdown()
    ]]):format(dir .. "/ready", waiting_code))
    f:close()
    local ok = os.execute(([[timeout 60 sh -c '
      lua5.4 %s > %s/out 2>&1 &
      pid=$!
      read line < %s/ready
      kill -INT $pid
      wait $pid']]):format(script, dir, dir))
    local out = assert(io.open(dir .. "/out")):read("a")
    os.execute("rm -rf " .. dir)
    return ok, out
  end

  for _, case in ipairs {
    { "f:result() on a future that never finishes", "never:result()" },
    { "weft.wait", "weft.wait({ never })" },
    { "as_completed", "for _ in weft.as_completed({ never }) do end" },
    { "a wait on a thread task's dependency",
      "ex:submit(function(x) return x end, never):result()" },
  } do
    it("interrupts " .. case[1], function()
      local ok, out = interrupted_while(case[2])
      assert.is_true(ok, out)
      assert.matches("AFTER\tfalse\t.*interrupted", out)
    end)
  end
end)
