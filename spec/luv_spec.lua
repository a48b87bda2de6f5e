-- weft.luv: weft's futures in a libuv event loop (luv), and the runtime's
-- completion source under it (core.completion_fd / core.dispatch).
--
-- luv has one default loop, shared by the whole busted process, so every
-- spec leaves it empty: after_each detaches weft, closes every handle still
-- open and lets the closes finish.  Every uv.run() goes through run_loop(),
-- which fails the spec (instead of hanging the file) when the loop does not
-- return: its watchdog is an unref'd timer, so it never keeps the loop
-- alive itself.  An error inside a luv callback would make luv exit the
-- process, so callbacks are wrapped (guard) and coroutines run under xpcall
-- (spawn): failures are collected and raised after uv.run() returns.
local uv = require "luv"
local weft = require "weft"
local core = require "weft.core"
local gate = require "helpers.gate"
local util = require "helpers.util"

local expect_error = util.expect_error
local await = weft.luv.await

local WATCHDOG_MS = 5000   -- only ever reached by a broken runtime

local callback_errors = {}

-- Wraps a luv callback: an error is recorded, the loop stopped, and the
-- error raised by run_loop() in the spec.
local function guard(fn)
  return function(...)
    local ok, err = xpcall(fn, debug.traceback, ...)
    if not ok then
      callback_errors[#callback_errors + 1] = err
      uv.stop()
    end
  end
end

-- What is alive in the loop, for failure messages.
local function loop_report()
  local parts = {}
  uv.walk(function(h)
    parts[#parts + 1] = ("%s(%s%s)"):format(h:get_type(),
      h:is_active() and "active" or "inactive", h:has_ref() and ", ref'd" or "")
  end)
  return ("handles: %s; callbacks_pending = %d"):format(
    #parts > 0 and table.concat(parts, " ") or "none", core.callbacks_pending())
end

-- uv.run() until the loop has nothing left to do.  Fails the spec when it
-- has not returned after WATCHDOG_MS (something keeps the loop alive), or
-- when a guarded callback raised.
local function run_loop()
  local hung, report = false, nil
  local dog = uv.new_timer()
  dog:unref()
  dog:start(WATCHDOG_MS, 0, function()
    hung = true
    report = loop_report()
    uv.stop()
  end)
  uv.run()
  dog:stop()
  dog:close()
  if #callback_errors > 0 then
    local err = callback_errors[1]
    callback_errors = {}
    error(err, 0)
  end
  if hung then
    error(("uv.run() did not return within %d ms: %s"):format(WATCHDOG_MS, report), 2)
  end
end

-- Runs fn(...) in a new coroutine (so it may await); returns a record that
-- results() reads once the loop has run.
local function spawn(fn, ...)
  local rec = { done = false }
  local co = coroutine.create(function(...)
    local r = table.pack(xpcall(fn, debug.traceback, ...))
    rec.done = true
    if r[1] then
      rec.values = table.pack(table.unpack(r, 2, r.n))
    else
      rec.err = r[2]
    end
  end)
  local ok, err = coroutine.resume(co, ...)
  assert(ok, err)
  return rec
end

-- The values the spawned function returned (raises its error; fails if it
-- never finished).
local function results(rec)
  assert(rec.done, "the coroutine never finished (still suspended in await?)")
  if rec.err ~= nil then error(rec.err, 0) end
  return table.unpack(rec.values, 1, rec.values.n)
end

-- A one-shot luv timer running fn after `ms` milliseconds.
local function after(ms, fn)
  local t = uv.new_timer()
  t:start(ms, 0, guard(function()
    t:close()
    fn()
  end))
  return t
end

describe("weft.luv", function()
  after_each(function()
    weft.luv.detach()
    util.cleanup()
    uv.walk(function(h) if not h:is_closing() then h:close() end end)
    uv.run("nowait")   -- finish the closes
    callback_errors = {}
  end)

  describe("attach", function()
    it("returns the poll handle, and the idle loop still returns", function()
      assert.is_false(weft.luv.attached())
      local poll = weft.luv.attach(uv)
      assert.is_true(weft.luv.attached())
      assert.equal("poll", poll:get_type())
      assert.is_true(poll:is_active())
      run_loop()   -- nothing pending: the handle does not keep the loop alive
      assert.is_true(poll:is_active())
    end)

    it("takes no argument (the default loop)", function()
      local poll = weft.luv.attach()
      assert.is_true(weft.luv.attached())
      assert.is_true(poll:is_active())
    end)

    it("raises kind invalid_state when already attached; the first stays", function()
      local poll = weft.luv.attach(uv)
      local err = expect_error("invalid_state", weft.luv.attach, uv)
      assert.truthy(util.mentions(err, "attach"), util.text(err))
      expect_error("invalid_state", weft.luv.attach)
      assert.is_true(weft.luv.attached())
      assert.is_true(poll:is_active())
      -- and the first attachment still works
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return "still" end)
      local rec = spawn(function() return await(f) end)
      run_loop()
      assert.equal("still", results(rec))
    end)

    it("raises kind config for something that is not luv", function()
      for _, bad in ipairs { 42, "luv", {}, true, function() end } do
        local err = expect_error("config", weft.luv.attach, bad)
        assert.is_string(err.message)
        assert.is_false(weft.luv.attached())
      end
    end)

    it("can attach again after detach; detach twice is harmless", function()
      local first = weft.luv.attach(uv)
      weft.luv.detach()
      assert.is_false(weft.luv.attached())
      assert.is_true(first:is_closing())
      weft.luv.detach()
      local second = weft.luv.attach(uv)
      assert.is_true(weft.luv.attached())
      assert.is_true(second:is_active())
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return "again" end)
      local rec = spawn(function() return await(f) end)
      run_loop()
      assert.equal("again", results(rec))
    end)
  end)

  describe("done-callbacks", function()
    it("run from uv.run() with the results, in registration order", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return "a", nil, 3 end, g.hold)
      local in_loop = false
      local calls = {}
      for i = 1, 2 do
        f:add_done_callback(function(fut)
          calls[#calls + 1] = {
            i = i, in_loop = in_loop, same = rawequal(fut, f),
            n = select("#", fut:result()), values = { fut:result() },
          }
        end)
      end
      after(0, function() g:release() end)   -- the task ends inside the loop
      assert.equal(0, #calls)
      in_loop = true
      run_loop()
      in_loop = false
      assert.equal(2, #calls)
      for i, c in ipairs(calls) do
        assert.equal(i, c.i)
        assert.is_true(c.in_loop)
        assert.is_true(c.same)
        assert.equal(3, c.n)
        assert.same({ "a", nil, 3 }, c.values)
      end
      assert.equal(0, core.callbacks_pending())
    end)

    it("registered before attach, run from uv.run() after it", function()
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) return hold() end, g.hold)
      local got
      f:add_done_callback(function(fut) got = fut:result() end)
      weft.luv.attach(uv)
      after(0, function() g:release() end)
      run_loop()
      assert.equal("go", got)
    end)

    it("keep the loop alive until they ran, even with nothing else active", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) return hold() end, g.hold)
      local ran = false
      f:add_done_callback(function() ran = true end)
      g:wait_started()
      g:release()        -- no luv handle of ours: only the callback waits
      run_loop()
      assert.is_true(ran)
      assert.equal(0, core.callbacks_pending())
    end)

    it("leave uv.run() free to return once one ran outside the loop", function()
      -- f:result() runs f's callbacks itself (a wait dispatches); after
      -- that nothing is pending, so the loop must not wait for them.
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return 5 end, g.hold)
      local ran = 0
      f:add_done_callback(function() ran = ran + 1 end)   -- f still pending
      assert.equal(1, core.callbacks_pending())
      g:release()
      assert.equal(5, f:result())
      assert.equal(1, ran)
      assert.equal(0, core.callbacks_pending())
      run_loop()
      assert.equal(1, ran)
    end)
  end)

  describe("await", function()
    it("suspends the coroutine and returns every value, nils included", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return nil, 2, nil, nil end, g.hold)
      local rec = spawn(function()
        local r = table.pack(await(f))
        return r
      end)
      assert.is_false(rec.done)   -- suspended, not blocked
      after(0, function() g:release() end)
      run_loop()
      local r = results(rec)
      assert.equal(4, r.n)
      assert.is_nil(r[1])
      assert.equal(2, r[2])
      assert.is_nil(r[3])
      assert.is_nil(r[4])
    end)

    it("returns no values for a task that returned none", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() end)
      local rec = spawn(function() return select("#", await(f)) end)
      run_loop()
      assert.equal(0, results(rec))
    end)

    it("raises the task's error: kind task, with the original value", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() error({ code = 42, why = "nope" }) end)
      local rec = spawn(function()
        local ok, err = pcall(await, f)
        return ok, err
      end)
      run_loop()
      local ok, err = results(rec)
      assert.is_false(ok)
      assert.is_true(weft.is(err, "task"), util.text(err))
      assert.same({ code = 42, why = "nope" }, err.value)
    end)

    it("returns at once for a future that is already done", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() return "x", nil end)
      f:result()
      local bare = weft.future()
      bare:set_result(1, nil, 3)
      local rec = spawn(function()
        local a = table.pack(await(f))
        local b = table.pack(await(bare))
        return a, b
      end)
      assert.is_true(rec.done)   -- never yielded: no loop needed
      local a, b = results(rec)
      assert.equal(2, a.n)
      assert.equal("x", a[1])
      assert.is_nil(a[2])
      assert.equal(3, b.n)
      assert.same({ 1, nil, 3, n = 3 }, b)
      assert.equal(0, core.callbacks_pending())
      run_loop()
    end)

    it("resumes when a bare future is set from a luv timer callback", function()
      weft.luv.attach(uv)
      local f = util.future()
      local rec = spawn(function() return await(f) end)
      assert.is_false(rec.done)
      after(10, function() f:set_result("from the timer") end)
      run_loop()
      assert.equal("from the timer", results(rec))
    end)

    it("works with a process-pool future", function()
      weft.luv.attach(uv)
      local ex = util.track(weft.processes { workers = 1 })
      local f = ex:submit(function(a, b) return a * b, "proc", nil end, 6, 7)
      local rec = spawn(function() return table.pack(await(f)) end)
      run_loop()
      local r = results(rec)
      assert.equal(3, r.n)
      assert.equal(42, r[1])
      assert.equal("proc", r[2])
      assert.is_nil(r[3])
    end)

    it("raises a process task's error", function()
      weft.luv.attach(uv)
      local ex = util.track(weft.processes { workers = 1 })
      local f = ex:submit(function() error("in the worker process", 0) end)
      local rec = spawn(function() return pcall(await, f) end)
      run_loop()
      local ok, err = results(rec)
      assert.is_false(ok)
      assert.is_true(weft.is(err, "task"), util.text(err))
      assert.equal("in the worker process", err.value)
    end)

    it("lets several coroutines wait on different futures, in any completion order", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 3 }
      local ga, gb, gc = gate.new(), gate.new(), gate.new()
      local task = function(hold, name) hold(); return name end
      local fa = ex:submit(task, ga.hold, "a")
      local fb = ex:submit(task, gb.hold, "b")
      local fc = ex:submit(task, gc.hold, "c")
      local order = {}
      -- awaited in the order a, b, c; finishing in the order c, a, b: each
      -- coroutine, once resumed, lets the next task go
      local ra = spawn(function()
        local v = await(fa); order[#order + 1] = v; gb:release(); return v
      end)
      local rb = spawn(function()
        local v = await(fb); order[#order + 1] = v; return v
      end)
      local rc = spawn(function()
        local v = await(fc); order[#order + 1] = v; ga:release(); return v
      end)
      assert.is_false(ra.done or rb.done or rc.done)
      after(0, function() gc:release() end)
      run_loop()
      assert.same({ "c", "a", "b" }, order)
      assert.equal("a", results(ra))
      assert.equal("b", results(rb))
      assert.equal("c", results(rc))
      assert.equal(0, core.callbacks_pending())
    end)

    it("can await one future after another in the same coroutine", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 2 }
      local rec = spawn(function()
        local sum = 0
        for i = 1, 5 do
          sum = sum + await(ex:submit(function(x) return x * x end, i))
        end
        return sum
      end)
      run_loop()
      assert.equal(55, results(rec))
    end)

    it("raises kind config for something that is not a future", function()
      weft.luv.attach(uv)
      local rec = spawn(function()
        local errs = {}
        local fake = setmetatable({}, { __index = weft.Future })
        for i, bad in ipairs { 42, "f", {}, fake, function() end, true } do
          local ok, err = pcall(await, bad)
          errs[i] = { ok = ok, err = err }
        end
        local ok, err = pcall(await, nil)
        errs[#errs + 1] = { ok = ok, err = err }
        return errs
      end)
      local errs = results(rec)
      assert.equal(7, #errs)
      for _, e in ipairs(errs) do
        assert.is_false(e.ok)
        assert.is_true(weft.is(e.err, "config"), util.text(e.err))
        assert.truthy(util.mentions(e.err, "future"), util.text(e.err))
      end
      run_loop()
    end)

    it("raises kind invalid_state on the main thread, and registers nothing", function()
      weft.luv.attach(uv)
      local f = util.future()
      local err = expect_error("invalid_state", await, f)
      assert.truthy(util.mentions(err, "coroutine"), util.text(err))
      assert.equal(0, core.callbacks_pending())
      run_loop()   -- nothing left waiting on f: the loop returns
      assert.is_false(f:done())
    end)

    it("raises kind invalid_state before attach instead of hanging", function()
      local f = util.future()
      local rec = spawn(function() return pcall(await, f) end)
      local ok, err = results(rec)
      assert.is_false(ok)
      assert.is_true(weft.is(err, "invalid_state"), util.text(err))
    end)
  end)

  describe("many coroutines", function()
    it("hundreds awaiting chains of tasks finish, the C stack does not grow per callback", function()
      local ex = util.track(weft.threads { workers = 2 })
      local px = util.track(weft.processes { workers = 2 })
      weft.luv.attach()
      local recs = {}
      for i = 1, 300 do
        recs[i] = spawn(function(k)
          local a = weft.luv.await(ex:submit(function(x) return x + 1 end, k))
          return weft.luv.await(px:submit(function(x) return x * 2 end, a))
        end, i)
      end
      run_loop()
      for i = 1, 300 do assert.equal((i + 1) * 2, results(recs[i])) end
    end)
  end)

  describe("one loop", function()
    it("drives a luv timer, a TCP echo and a thread task together", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return "task done" end, g.hold)
      g:wait_started()   -- the task is running, held at the gate

      local MESSAGES = { "hello", "weft", "and luv" }
      local N_TICKS = 5
      local log = {}
      local ticks, ticks_while_running = 0, 0
      local echoed, echoed_while_running = {}, 0

      -- echo server on an ephemeral port
      local server = uv.new_tcp()
      assert(server:bind("127.0.0.1", 0))
      local port = server:getsockname().port
      assert(server:listen(16, guard(function(err)
        assert(not err, err)
        local conn = uv.new_tcp()
        assert(server:accept(conn))
        conn:read_start(guard(function(rerr, data)
          if data then
            conn:write(data)
          else   -- EOF (or an error): the client is gone
            conn:close()
            server:close()
          end
        end))
      end)))

      -- client: sends a line, waits for its echo, sends the next
      local client = uv.new_tcp()
      local buf, sent = "", 0
      local function send_next()
        sent = sent + 1
        client:write(MESSAGES[sent] .. "\n")
      end
      client:connect("127.0.0.1", port, guard(function(err)
        assert(not err, err)
        client:read_start(guard(function(rerr, data)
          assert(not rerr, rerr)
          if not data then return end
          buf = buf .. data
          for line in buf:gmatch("([^\n]*)\n") do
            echoed[#echoed + 1] = line
            if not f:done() then echoed_while_running = echoed_while_running + 1 end
          end
          buf = buf:match("[^\n]*$")
          if #echoed < #MESSAGES then
            send_next()
          else
            log[#log + 1] = "echo done"
            client:close()
          end
        end))
        send_next()
      end))

      -- timer: ticks; once it ticked enough and the echo is over, it lets
      -- the task finish
      local timer = uv.new_timer()
      timer:start(5, 5, guard(function()
        ticks = ticks + 1
        if not f:done() then ticks_while_running = ticks_while_running + 1 end
        if ticks >= N_TICKS and #echoed == #MESSAGES then
          log[#log + 1] = "gate released"
          g:release()
          timer:stop()
          timer:close()
        end
      end))

      local rec = spawn(function()
        local v = await(f)
        log[#log + 1] = "task done"
        return v
      end)
      run_loop()

      assert.equal("task done", results(rec))
      assert.same(MESSAGES, echoed)
      assert.equal(#MESSAGES, echoed_while_running)
      assert.is_true(ticks >= N_TICKS)
      assert.equal(ticks, ticks_while_running)
      assert.same({ "echo done", "gate released", "task done" }, log)
    end)

    it("sleeps while waiting on a long task: no busy-waiting", function()
      weft.luv.attach(uv)
      local ex = util.threads { workers = 1 }
      local f = ex:submit(function() os.execute("sleep 0.5"); return "slept" end)
      -- counts loop iterations (unref'd: it keeps nothing alive)
      local iterations = 0
      local prep = uv.new_prepare()
      prep:unref()
      prep:start(function() iterations = iterations + 1 end)
      local rec = spawn(function() return await(f) end)
      local cpu0, t0 = os.clock(), uv.hrtime()
      run_loop()
      local cpu, wall = os.clock() - cpu0, (uv.hrtime() - t0) / 1e9
      prep:stop()
      prep:close()
      assert.equal("slept", results(rec))
      -- the wait is >= 0.5 s of wall time (unless the task had already
      -- ended); a polling loop would burn about as much CPU
      assert.is_true(cpu < 0.1,
        ("uv.run() used %.3f s of CPU in %.3f s of waiting"):format(cpu, wall))
      assert.is_true(iterations < 20,
        ("the loop went round %d times while waiting"):format(iterations))
    end)
  end)

  describe("completion source", function()
    it("is one fd, readable once a future with a callback completes, quiet after dispatch", function()
      local fd = core.completion_fd()
      assert.equal("integer", math.type(fd))
      assert.is_true(fd >= 0)
      assert.equal(fd, core.completion_fd())
      core.dispatch()   -- start from a quiet source

      local ex = util.threads { workers = 1 }
      local g = gate.new()
      local f = ex:submit(function(hold) hold(); return "r" end, g.hold)
      local calls, got = 0, nil
      f:add_done_callback(function(fut) calls = calls + 1; got = fut:result() end)
      assert.equal(1, core.callbacks_pending())

      local readable = 0
      local poll = uv.new_poll(fd)
      local function watch()
        poll:start("r", guard(function(err)
          assert(not err, err)
          readable = readable + 1
          poll:stop()
        end))
      end

      -- task still held: not readable
      g:wait_started()
      watch()
      uv.run("nowait")
      assert.equal(0, readable)
      poll:stop()

      -- the task completes: the fd becomes readable, nothing ran yet
      watch()
      g:release()
      run_loop()   -- returns once the poll saw the fd readable and stopped
      assert.equal(1, readable)
      assert.equal(0, calls)
      assert.equal(1, core.callbacks_pending())

      -- dispatch runs the one callback and quiets the fd
      assert.equal(1, core.dispatch())
      assert.equal(1, calls)
      assert.equal("r", got)
      assert.equal(0, core.callbacks_pending())
      watch()
      uv.run("nowait")
      assert.equal(1, readable)
      poll:stop()
      poll:close()
      assert.equal(0, core.dispatch())
    end)
  end)
end)
