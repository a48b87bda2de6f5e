-- weft.redis{}: the Redis executor, against real redis-server processes and
-- real `weft worker` processes (helpers/redis.lua).  The executor API over
-- a Unix socket and TCP, URLs and their errors, cancel, signed messages and
-- what a worker does with one it must refuse, AUTH, and the faults the
-- executor is there to survive: a worker killed with -9 mid-task, Redis
-- killed and restarted from its AOF, a thousand tasks while workers come
-- and go, a task that keeps killing its worker, and a graceful SIGTERM.
--
-- House rules.  Each spec starts its own redis-server (the basics share
-- one, started by their describe block), never a global one.  Nothing
-- waits on time for correctness: the specs wait on events (a result, a
-- file a task writes, a line in a worker's log), each wait bounded (WAIT
-- seconds) so a broken runtime fails the spec instead of hanging the file.
-- Tasks that must be stopped spin for a bounded time (os.time), longer
-- than any wait on them; tasks that must be held wait for a "release" file
-- in the spec's scratch directory, which the cleanup creates in any case.
-- The one sleep (the heartbeat spec) only gives a wrong redelivery the
-- time to happen.
--
-- What the specs rely on beyond the API: tasks are entries of the stream
-- weft:<queue>:tasks with field m (the message) and, with a secret, s (its
-- signature); dead letters go to weft:<queue>:dead; `weft worker` prints
-- "weft worker: ready" once it serves, a line with "warning" and "anyone
-- who can write to" when it has no secret, a line with "refused" and the
-- entry id for each entry it refuses, and a line with "stopping" once it
-- has taken a SIGTERM.
local uv = require "luv"
local weft = require "weft"
local util = require "helpers.util"
local R = require "helpers.redis"

local expect_error = util.expect_error

local WAIT = 60   -- seconds: the bound on any one wait for an event

-- === functions that run inside tasks (copied there as upvalues) ===========

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

-- Appends text (nothing by default) to the file at path, creating it.
local function append(path, text)
  local f = assert(io.open(path, "a"))
  f:write(text or "")
  f:close()
end

-- Waits until the spec creates the file at path.  Bounded, so that a spec
-- that fails before it creates the file does not leave the task behind.
local function await_file(path, seconds)
  local deadline = os.time() + (seconds or 120)
  while not exists(path) do
    if os.time() > deadline then error("gave up waiting for " .. path) end
    os.execute("sleep 0.02")
  end
end

-- The bytes of the file at path, or "" when there is none.  Standalone
-- (not util.read): tasks capture it and take it to the workers.
local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local text = f:read("a")
  f:close()
  return text
end

-- A bounded spin, and the pid of the process that runs this code.
local spin, self_pid = util.spin, util.self_pid

-- === helpers of the spec ==================================================

local function count_lines(path)
  return select(2, slurp(path):gsub("\n", ""))
end

local function lines(path)
  local t = {}
  for line in slurp(path):gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- How many files in `dir` have a name starting with `prefix`.
local function count_files(dir, prefix)
  local n = 0
  local scan = uv.fs_scandir(dir)
  while scan do
    local name = uv.fs_scandir_next(scan)
    if not name then break end
    if name:sub(1, #prefix) == prefix then n = n + 1 end
  end
  return n
end

-- True while the process `pid` exists and is not a zombie.
local function pid_alive(pid)
  local stat = util.read("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match(".*%) (%a)") ~= "Z"
end

local function tasks_stream(queue) return "weft:" .. queue .. ":tasks" end
local function dead_stream(queue) return "weft:" .. queue .. ":dead" end

-- A copy of the bytes `s` with one bit of byte i (default: the middle one)
-- flipped.
local function flip(s, i)
  i = i or (#s // 2 + 1)
  return s:sub(1, i - 1) .. string.char(s:byte(i) ~ 0x01) .. s:sub(i + 1)
end

-- The worker options `opts` with `name` set.
local function named(opts, name)
  local t = { name = name }
  for k, v in pairs(opts) do t[k] = v end
  return t
end

-- Case-insensitive "mentions".
local function mentions_any(err, words)
  local text = util.text(err):lower()
  for _, w in ipairs(words) do
    if text:find(w:lower(), 1, true) then return true end
  end
  return false
end

-- What the spec started and must clean up: executors (shut down), futures
-- that may be left pending (force-cancelled first, so that shutting down
-- never waits for a task no worker will finish), scratch directories.
local executors, futures, scratch_dirs = {}, {}, {}

local function redis(opts)
  local ex = weft.redis(opts)
  executors[#executors + 1] = ex
  return ex
end

local function executor(spec)
  local ex = weft.executor(spec)
  executors[#executors + 1] = ex
  return ex
end

local function track(f)
  futures[#futures + 1] = f
  return f
end

-- A fresh directory for files shared by the spec and its tasks; tasks
-- hold on its "release" file.
local function scratch()
  local dir = assert(uv.fs_mkdtemp("/tmp/weft-spec.XXXXXX"))
  scratch_dirs[#scratch_dirs + 1] = dir
  return dir
end

-- For after_each: release every held task, force-cancel the tracked
-- futures still pending, shut the executors down, remove the scratch
-- directories.
local function settle()
  local first_err
  local function try(fn, ...)
    local ok, err = pcall(fn, ...)
    if not ok then first_err = first_err or err end
  end
  for _, dir in ipairs(scratch_dirs) do try(append, dir .. "/release") end
  for _, f in ipairs(futures) do
    try(function() if not f:done() then f:cancel { force = true } end end)
  end
  for _, ex in ipairs(executors) do
    try(ex.shutdown, ex, { wait = true, cancel_futures = true })
  end
  for _, dir in ipairs(scratch_dirs) do os.execute("rm -rf " .. util.quote(dir)) end
  executors, futures, scratch_dirs = {}, {}, {}
  if first_err ~= nil then error(first_err, 0) end
end

-- settle(), then kill every worker and stop every server, even when
-- settle() failed.
local function cleanup()
  local ok, err = pcall(settle)
  R.cleanup()
  if not ok then error(err, 0) end
end

-- f:result(WAIT), with every worker's log added to the error when it fails.
local function result(f)
  local r = table.pack(pcall(f.result, f, WAIT))
  if not r[1] then error(util.text(r[2]) .. "\n" .. R.logs(), 2) end
  return table.unpack(r, 2, r.n)
end

-- f:exception(WAIT), with every worker's log added when it does not come:
-- a future that stays pending fails the spec instead of hanging it.
local function bounded_exception(f)
  local ok, err = pcall(f.exception, f, WAIT)
  if not ok then error("no outcome within " .. WAIT .. " s: " .. util.text(err) .. "\n" .. R.logs(), 2) end
  return err
end

-- Submits fn(...) to `ex` while no worker serves its queue, takes the
-- entry it added to the task stream and deletes it there, so that no
-- worker ever reads it.  Returns the entry's fields (name -> bytes) and
-- the future, which stays pending (tracked: the cleanup cancels it).
local function capture(server, ex, queue, fn, ...)
  local f = track(ex:submit(fn, ...))
  local entries = R.wait_until("the task's entry in " .. tasks_stream(queue), WAIT, function()
    local r = server:cmd("XRANGE", tasks_stream(queue), "-", "+")
    return type(r) == "table" and r[1] ~= nil and r
  end)
  assert.equal(1, #entries, "expected one entry in the fresh stream")
  local id, flat = entries[1][1], entries[1][2]
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  assert.equal(1, server:cmd("XDEL", tasks_stream(queue), id))
  return fields, f
end

-- =========================================================================

describe("weft.redis basics", function()
  local Q = "basics"
  local server, worker, ex

  setup(function()
    server = R.start { port = true }
    worker = R.worker(server.url, { queue = Q, workers = 2, name = "basics-w" })
    ex = weft.redis { url = server.url, queue = Q }
  end)

  teardown(function()
    if ex then pcall(ex.shutdown, ex, { wait = true, cancel_futures = true }) end
    R.cleanup()
  end)

  after_each(settle)

  describe("submit", function()
    it("returns every value of a task, nils and tables included", function()
      local f = ex:submit(function(a, t)
        return a + 1, nil, "x", { sum = t[1] + t[2], nested = { t } }, nil
      end, 41, { 1, 2 })
      local r = table.pack(f:result(WAIT))
      assert.equal(5, r.n)
      assert.equal(42, r[1])
      assert.is_nil(r[2])
      assert.equal("x", r[3])
      assert.same({ sum = 3, nested = { { 1, 2 } } }, r[4])
      assert.is_nil(r[5])
    end)

    it("copies binary strings, 64-bit integers and floats exactly", function()
      local blob = "\0\1\255\r\n" .. string.rep("z", 100000)
      local f = ex:submit(function(b, i, x) return b .. "!", i, x, -0.0 end,
                          blob, math.mininteger, 0.1)
      local b, i, x, z = f:result(WAIT)
      assert.equal(blob .. "!", b)
      assert.equal(math.mininteger, i)
      assert.equal(0.1, x)
      assert.equal("-0.0", tostring(z))
    end)

    it("runs closures with their upvalues", function()
      local base = 100
      local function add(x) return base + x end
      assert.equal(107, ex:submit(function(y) return add(y) end, 7):result(WAIT))
    end)
  end)

  it("maps 200 items in order", function()
    local items = {}
    for i = 1, 200 do items[i] = i end
    local n = 0
    for i, v in ex:map(function(x) return x * x end, items, { timeout = WAIT }) do
      n = n + 1
      assert.equal(n, i)
      assert.equal(i * i, v)
    end
    assert.equal(200, n)
  end)

  it("delivers an error raised in a task as kind task, with its message and the worker's traceback", function()
    local f = ex:submit(function() error("kaboom") end)
    local err = f:exception(WAIT)
    assert.truthy(weft.is(err, "task"), util.text(err))
    assert.truthy(util.mentions(err, "kaboom"), util.text(err))
    assert.equal("string", type(err.traceback))
    assert.truthy(err.traceback:find("redis_spec.lua", 1, true), err.traceback)
    expect_error("task", f.result, f, WAIT)
    assert.equal("failed", f:state())

    local g = ex:submit(function() error({ code = 42 }) end)
    assert.equal(42, g:exception(WAIT).value.code)
  end)

  it("stops a task at its timeout with kind timeout, and the worker runs the next tasks", function()
    local forever = weft.task { function() spin(120) return "not stopped" end, timeout = 0.5 }
    local f = ex:submit(forever)
    local err = f:exception(WAIT)
    assert.truthy(weft.is(err, "timeout"), util.text(err))
    local fs = {}
    for i = 1, 4 do fs[i] = ex:submit(function(x) return x end, i) end
    for i = 1, 4 do assert.equal(i, fs[i]:result(WAIT)) end
    assert.is_true(worker:alive())
  end)

  it("applies the executor's timeout to every task", function()
    local tex = redis { url = server.url, queue = Q, timeout = 0.5 }
    local f = tex:submit(function() spin(120) end)
    local err = f:exception(WAIT)
    assert.truthy(weft.is(err, "timeout"), util.text(err))
    assert.equal("quick", tex:submit(function() return "quick" end):result(WAIT))
    assert.equal(1, tex:stats().timed_out)
  end)

  it("retries a failing task", function()
    local counter = scratch() .. "/count"
    local flaky = weft.task { function(path)
      append(path, "x")
      local n = #slurp(path)
      if n < 3 then error("attempt " .. n .. " fails") end
      return "ok after " .. n
    end, retries = 2 }
    assert.equal("ok after 3", ex:submit(flaky, counter):result(WAIT))
    assert.equal("xxx", util.read(counter))
  end)

  it("fails a task whose retries are used up, after every attempt ran", function()
    local counter = scratch() .. "/count"
    local doomed = weft.task { function(path) append(path, "x") error("always") end, retries = 1 }
    local err = ex:submit(doomed, counter):exception(WAIT)
    assert.truthy(weft.is(err, "task") and util.mentions(err, "always"), util.text(err))
    assert.equal("xx", util.read(counter))
  end)

  describe("dependencies", function()
    it("pass an upstream future's first result to the task", function()
      local a = ex:submit(function() return 20, "ignored" end)
      local b = ex:submit(function(x, y) return x + y end, a, 1)
      local c = ex:submit(function(t) return t.v * 2 end, { v = a })
      assert.equal(21, b:result(WAIT))
      assert.equal(40, c:result(WAIT))
    end)

    it("wait for a bare future", function()
      local up = weft.future()
      local f = track(ex:submit(function(x) return x * 2 end, up))
      local done = weft.wait({ f }, { timeout = 0.2 })
      assert.equal(0, #done)
      up:set_result(21)
      assert.equal(42, f:result(WAIT))
    end)

    it("fail the task with kind dependency when the upstream failed, without running it", function()
      local ran = scratch() .. "/ran"
      local bad = ex:submit(function() error("upstream broke") end)
      local d = ex:submit(function(_, path) append(path, "ran") end, bad, ran)
      local err = d:exception(WAIT)
      assert.truthy(weft.is(err, "dependency"), util.text(err))
      assert.truthy(util.mentions(err, "upstream broke"), util.text(err))
      assert.is_false(exists(ran))
    end)
  end)

  it("runs a flow", function()
    local double = weft.task { function(x) return x * 2 end, name = "double" }
    local add = weft.task { function(a, b) return a + b end, name = "add" }
    local run = weft.flow { function(n) return add(double(n), double(n + 1)) end, name = "on-redis" }
      :run(5, { executor = ex })
    assert.equal("completed", run.state)
    assert.equal(22, run.result)
    assert.equal(3, #run.tasks)
  end)

  describe("weft.log in remote tasks", function()
    local level
    before_each(function() level = weft.log.level() end)
    after_each(function()
      weft.log.set_sink(nil)
      weft.log.set_level(level)
    end)

    it("delivers a task's records to the submitter before its result, naming task and worker", function()
      local got = {}
      weft.log.set_sink(function(r) got[#got + 1] = r end)
      local t = weft.task { function(x)
        weft.log.info("hello " .. x)
        weft.log.warn("careful")
        return x
      end, name = "greet" }
      local f = ex:submit(t, 7)
      assert.equal(7, f:result(WAIT))   -- (delivers what came before the result)
      assert.equal(2, #got)
      assert.same({ "info", "hello 7", "greet", 1 },
                  { got[1].level, got[1].message, got[1].task, got[1].attempt })
      assert.same({ "warn", "careful" }, { got[2].level, got[2].message })
      assert.truthy(got[1].worker:find("basics-w", 1, true), got[1].worker)
      assert.equal(f:info().worker, got[1].worker)
    end)

    it("makes and delivers debug records when the submitter asks for them", function()
      local got = {}
      weft.log.set_sink(function(r) got[#got + 1] = r.level .. ":" .. r.message end)
      local t = weft.task { function() weft.log.debug("fine detail") weft.log.info("coarse") end }
      weft.log.set_level("info")
      ex:submit(t):result(WAIT)
      assert.same({ "info:coarse" }, got)
      got = {}
      weft.log.set_level("debug")
      ex:submit(t):result(WAIT)
      assert.same({ "debug:fine detail", "info:coarse" }, got)
    end)
  end)

  it("runs a flow script with weft run --executor and the Redis URL", function()
    local script = util.write_temp([[
      local weft = require "weft"
      local double = weft.task { function(x) return x * 2 end, name = "double" }
      local run = weft.flow { function(n) return double(n) end, name = "cli-redis" }:run(21)
      print("state", run.state, "result", run.result, "worker", run.tasks[1].worker)
    ]], ".lua")
    local program = os.getenv("WEFT_BUILD_DIR") .. "/weft/weft"
    local outfile = util.tmpname()
    local ok = os.execute(("timeout 120 %s run --no-progress --executor %s %s > %s 2>&1"):format(
      util.quote(program), util.quote(server.url .. "?queue=" .. Q), util.quote(script),
      util.quote(outfile)))
    local out = util.read(outfile) or ""
    assert.is_true(ok, out)
    assert.truthy(out:find("state\tcompleted\tresult\t42\tworker\tbasics-w", 1, true), out)
  end)

  describe("weft.wait and weft.as_completed", function()
    it("weft.wait returns every future when all are done", function()
      local fs = {}
      for i = 1, 10 do fs[i] = ex:submit(function(x) return x end, i) end
      local done, not_done = weft.wait(fs, { timeout = WAIT })
      assert.equal(10, #done)
      assert.equal(0, #not_done)
      for i = 1, 10 do assert.equal(fs[i], done[i]) end
    end)

    it("weft.wait with FIRST_COMPLETED returns while a task is still held", function()
      local release = scratch() .. "/release"
      local held = track(ex:submit(function(path) await_file(path) return "held" end, release))
      local quick = ex:submit(function() return "quick" end)
      local done, not_done = weft.wait({ held, quick },
        { timeout = WAIT, return_when = weft.FIRST_COMPLETED })
      assert.equal(1, #done)
      assert.equal(quick, done[1])
      assert.equal(held, not_done[1])
      append(release)
      assert.equal("held", held:result(WAIT))
    end)

    it("weft.as_completed yields futures as they finish", function()
      local release = scratch() .. "/release"
      local held = track(ex:submit(function(path) await_file(path) return "held" end, release))
      local q1 = ex:submit(function() return 1 end)
      local q2 = ex:submit(function() return 2 end)
      local order = {}
      for f in weft.as_completed({ held, q1, q2 }, WAIT) do
        order[#order + 1] = f
        if #order == 2 then append(release) end   -- only now can `held` finish
      end
      assert.equal(3, #order)
      assert.equal(held, order[3])
      assert.equal("held", held:result(WAIT))
    end)
  end)

  it("f:info() tells the attempts and the remote worker", function()
    local f = ex:submit(weft.task { function() return 1 end, name = "one" })
    f:result(WAIT)
    local info = f:info()
    assert.equal(1, info.attempts)
    assert.equal("one", info.task)
    assert.truthy(info.worker:find("basics-w", 1, true), info.worker)
    assert.truthy(info.worker:match(" process %d+$"), info.worker)
  end)

  it("counts a batch in stats()", function()
    local sx = redis { url = server.url, queue = Q }
    local fs = {}
    for i = 1, 10 do fs[#fs + 1] = sx:submit(function(x) return x end, i) end
    for _ = 1, 3 do fs[#fs + 1] = sx:submit(function() error("no") end) end
    local _, not_done = weft.wait(fs, { timeout = WAIT })
    assert.equal(0, #not_done)
    for i = 11, 13 do assert.truthy(weft.is(fs[i]:exception(0), "task")) end
    local s = sx:stats()
    assert.equal("redis", s.kind)
    assert.equal(13, s.submitted)
    assert.equal(10, s.completed)
    assert.equal(3, s.failed)
    assert.equal(0, s.cancelled)
    assert.equal(0, s.timed_out)
    assert.equal(0, s.queued)
    assert.equal(0, s.busy)
    assert.equal(0, s.redelivered)
    assert.equal(0, s.dead_lettered)
    assert.equal("number", type(s.workers))
  end)

  describe("URLs", function()
    it("weft.executor builds one from a unix:// spec with a query", function()
      local ux = executor(server.url .. "?queue=" .. Q)
      assert.equal("redis", ux:stats().kind)
      assert.equal("unix", ux:submit(function() return "unix" end):result(WAIT))
      local dbx = executor(server.url .. "?db=0&queue=" .. Q)
      assert.equal("db0", dbx:submit(function() return "db0" end):result(WAIT))
    end)

    it("works over TCP, from weft.executor and from weft.redis", function()
      local tx = executor(server.tcp_url .. "?queue=" .. Q)
      assert.equal("tcp", tx:submit(function() return "tcp" end):result(WAIT))
      local rx = redis { url = server.tcp_url, queue = Q }
      assert.equal("tcp too", rx:submit(function() return "tcp too" end):result(WAIT))
    end)

    it("takes the queue from the URL, and the queue option over it", function()
      local fromurl = redis { url = server.url .. "?queue=" .. Q }
      assert.equal(1, fromurl:submit(function() return 1 end):result(WAIT))
      local over = redis { url = server.url .. "?queue=nobody-serves-this", queue = Q }
      assert.equal(2, over:submit(function() return 2 end):result(WAIT))
    end)

    for _, case in ipairs {
      { "redis://", { "host", "redis://" } },
      { "http://x", { "http", "scheme" } },
      { "redis://127.0.0.1:abc/0", { "port", "abc" } },
      { "redis://127.0.0.1:99999/0", { "port", "99999" } },
      { "redis://127.0.0.1:6379/x", { "db", "database" } },
      { "unix://", { "path", "socket", "unix://" } },
    } do
      local url, words = case[1], case[2]
      it("raises kind config for the URL " .. url .. ", naming the problem", function()
        local err = expect_error("config", weft.redis, { url = url })
        assert.truthy(mentions_any(err, words), util.text(err))
        expect_error("config", weft.executor, url)
      end)
    end

    it("raises kind broken naming the address when the server cannot be reached", function()
      local port = R.free_port()
      local err = expect_error("broken", weft.redis, { url = ("redis://127.0.0.1:%d/0"):format(port) })
      assert.truthy(util.mentions(err, "127.0.0.1:" .. port), util.text(err))
      local sock = "/tmp/weft-no-such-dir/redis.sock"
      err = expect_error("broken", weft.redis, { url = "unix://" .. sock })
      assert.truthy(util.mentions(err, sock), util.text(err))
    end)
  end)

  describe("options", function()
    it("raises kind config for an unknown option, naming it", function()
      local err = expect_error("config", weft.redis, { url = server.url, queu = "x" })
      assert.truthy(util.mentions(err, "queu"), util.text(err))
    end)

    for _, case in ipairs {
      { "max_deliveries", 0 }, { "max_deliveries", 1.5 }, { "max_deliveries", "3" },
      { "result_ttl", 0 }, { "result_ttl", -1 }, { "timeout", -1 }, { "queue", "" },
      { "message_ttl", 0 }, { "message_ttl", 0 / 0 }, { "message_ttl", "60" },
    } do
      local name, value = case[1], case[2]
      local shown = type(value) == "string" and ("%q"):format(value) or tostring(value)
      it(("raises kind config for %s = %s"):format(name, shown), function()
        local err = expect_error("config", weft.redis, { url = server.url, [name] = value })
        assert.truthy(util.mentions(err, name), util.text(err))
      end)
    end

    it("accepts every documented option", function()
      local ox = redis { url = server.url, queue = Q, timeout = 30,
                         result_ttl = 60, message_ttl = 600, max_deliveries = 5,
                         name = "opts" }
      assert.equal("ok", ox:submit(function() return "ok" end):result(WAIT))
    end)
  end)

  describe("shutdown", function()
    it("waits for the tasks, then submit and map raise kind shutdown", function()
      local sx = redis { url = server.url, queue = Q }
      local f = sx:submit(function() return "before" end)
      sx:shutdown { wait = true }
      assert.equal("before", f:result(0))
      expect_error("shutdown", sx.submit, sx, function() end)
      expect_error("shutdown", sx.map, sx, function() end, { 1 })
      sx:shutdown { wait = true }   -- idempotent
    end)

    it("happens at the end of a <close> scope", function()
      local f
      do
        local cx <close> = weft.redis { url = server.url, queue = Q }
        f = cx:submit(function() return "closed" end)
      end
      assert.is_true(f:done())
      assert.equal("closed", f:result(0))
    end)
  end)
end)

-- =========================================================================

describe("weft.redis cancel", function()
  local Q = "cancel"
  local server

  before_each(function() server = R.start {} end)
  after_each(cleanup)

  it("cancels a task still queued in the stream: it never runs", function()
    local ex = redis { url = server.url, queue = Q }
    local dir = scratch()
    local f = ex:submit(function(path) append(path, "ran") return "ran" end, dir .. "/cancelled")
    local g = track(ex:submit(function() return "after" end))
    assert.is_true(f:cancel())
    assert.is_true(f:cancelled())
    assert.equal("cancelled", f:state())
    expect_error("cancelled", f.result, f, WAIT)
    -- One worker runs the stream in order: by the time g is done, it is
    -- past f's entry.
    R.worker(server.url, { queue = Q, workers = 1 })
    assert.equal("after", result(g))
    assert.is_false(exists(dir .. "/cancelled"))
    assert.is_true(f:cancel())   -- still cancelled
    local s = ex:stats()
    assert.equal(1, s.cancelled)
    assert.equal(1, s.completed)
  end)

  it("forced, stops a running task, and the worker serves the next one", function()
    local w = R.worker(server.url, { queue = Q, workers = 1, heartbeat = 0.2 })
    local ex = redis { url = server.url, queue = Q }
    local dir = scratch()
    local started, finished = dir .. "/started", dir .. "/finished"
    local f = track(ex:submit(function(s, done)
      append(s)
      spin(120)                 -- longer than the wait below: it must be stopped
      append(done)
      return "not stopped"
    end, started, finished))
    R.wait_until("the task to start", WAIT, function() return exists(started) end, R.logs)
    assert.is_false(f:cancel())   -- running: a plain cancel does not stop it
    assert.is_true(f:cancel { force = true })
    assert.equal("cancelled", f:state())
    assert.is_true(f:cancelled())
    expect_error("cancelled", f.result, f, 0)
    -- With one worker slot, this runs only once the forced task is gone.
    local g = track(ex:submit(function() return "next" end))
    assert.equal("next", result(g))
    assert.is_false(exists(finished))
    assert.is_true(w:alive())
    assert.equal(1, ex:stats().cancelled)
  end)
end)

-- =========================================================================

describe("weft.redis security", function()
  local Q = "secure"
  local SECRET = "correct horse battery staple"
  local server

  before_each(function() server = R.start {} end)
  after_each(cleanup)

  it("runs tasks when the client and the worker share the secret; entries are signed", function()
    local ex = redis { url = server.url, queue = Q, secret = SECRET }
    local fields = capture(server, ex, Q, function() return "captured" end)
    assert.equal("string", type(fields.m))
    assert.truthy(fields.s and #fields.s > 0, "no signature field s")
    local w = R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
    assert.equal(6, result(ex:submit(function(a, b) return a * b end, 2, 3)))
    assert.is_nil(w:log():find("anyone who can write to", 1, true), w:log())
  end)

  it("warns when a worker has no secret", function()
    local w = R.worker(server.url, { queue = Q, workers = 1 })
    w:wait_line({ "warning", "anyone who can write to" })
  end)

  it("refuses a tampered message, never runs it, and keeps serving", function()
    local ex = redis { url = server.url, queue = Q, secret = SECRET }
    local side = scratch() .. "/side"
    local fields = capture(server, ex, Q, function(path) append(path, "ran") return "ran" end, side)
    local w = R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
    local id = server:cmd("XADD", tasks_stream(Q), "*", "m", flip(fields.m), "s", fields.s)
    assert.equal("string", type(id), util.text(id))
    w:wait_line({ "refused", id })
    assert.equal("ok", result(ex:submit(function() return "ok" end)))
    assert.is_false(exists(side))
    assert.is_true(w:alive())
  end)

  it("refuses an unsigned entry when the worker has a secret", function()
    local ex = redis { url = server.url, queue = Q, secret = SECRET }
    local side = scratch() .. "/side"
    local fields = capture(server, ex, Q, function(path) append(path, "ran") end, side)
    local w = R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
    local id = server:cmd("XADD", tasks_stream(Q), "*", "m", fields.m)
    w:wait_line({ "refused", id })
    assert.equal("ok", result(ex:submit(function() return "ok" end)))
    assert.is_false(exists(side))
  end)

  it("fails the tasks of a client with another secret with kind broken, and never runs them", function()
    local w = R.worker(server.url, { queue = Q, workers = 1, secret = "B" })
    local ex = redis { url = server.url, queue = Q, secret = "A" }
    local side = scratch() .. "/side"
    local f = track(ex:submit(function(path) append(path, "ran") end, side))
    local err = bounded_exception(f)
    assert.truthy(weft.is(err, "broken"), util.text(err))
    assert.truthy(mentions_any(err, { "different secrets" }), util.text(err))
    assert.truthy(mentions_any(err, { "refused" }), util.text(err))
    w:wait_line({ "refused", "bad signature" })
    assert.is_false(exists(side))
    assert.is_true(w:alive())
    assert.equal(1, ex:stats().refused)
  end)

  describe("AUTH", function()
    it("logs in with a password: redis://:pass@host:port/db", function()
      local s = R.start { password = "pw-1", port = true }
      local url = ("redis://:pw-1@127.0.0.1:%d/0"):format(s.port)
      R.worker(url, { queue = Q, workers = 1 })
      local ex = redis { url = url, queue = Q }
      assert.equal("authed", result(ex:submit(function() return "authed" end)))
    end)

    it("logs in as an ACL user: redis://user:pass@host:port/db", function()
      local s = R.start { user = "alice", pass = "pw-2", port = true }
      local url = ("redis://alice:pw-2@127.0.0.1:%d/0"):format(s.port)
      R.worker(url, { queue = Q, workers = 1 })
      local ex = executor(url .. "?queue=" .. Q)
      assert.equal("alice", result(ex:submit(function() return "alice" end)))
    end)

    it("raises kind config about authentication for a wrong password", function()
      local s = R.start { password = "right", port = true }
      local err = expect_error("config", weft.redis,
        { url = ("redis://:wrong@127.0.0.1:%d/0"):format(s.port), queue = Q })
      assert.truthy(mentions_any(err, { "auth" }), util.text(err))
      local a = R.start { user = "alice", pass = "right", port = true }
      err = expect_error("config", weft.redis,
        { url = ("redis://alice:wrong@127.0.0.1:%d/0"):format(a.port), queue = Q })
      assert.truthy(mentions_any(err, { "auth" }), util.text(err))
    end)
  end)
end)

-- =========================================================================

-- The task message as rmsg.h lays it out from version 2 on: what a spec
-- needs to forge the unsigned refusal notice an attacker could write.
local function task_address(m)
  local id, reply, nonce, pos = string.unpack("<s4s4s4", m, 6)
  return { version = m:byte(4), id = id, reply = reply, nonce = nonce,
           expires = (string.unpack("<d", m, pos)) }
end

-- A refusal notice for the task at address `a` (rmsg.h: notice), and an
-- unsigned result claiming it finished with `values`.
local function forged_notice(a, reason, nonce)
  return "WFT\2X" .. string.pack("<s4s4Bds4s4", a.id, nonce or a.nonce, reason, 0,
                                 "mallory", "0-1")
end

local function forged_result(a, ...)
  local FS_FINISHED = 3
  return "WFT\2R" .. string.pack("<s4s4BBI4s4dds4", a.id, a.nonce, FS_FINISHED, 0, 1,
                                 "mallory", 0, 0, weft.core._wire_encode(...))
end

-- The server's clock (TIME), in seconds.
local function server_time(server)
  local t = server:cmd("TIME")
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

-- The entries of a stream as lists of { id, fields (name -> bytes) }.
local function entries(server, stream)
  local out = {}
  for _, e in ipairs(server:cmd("XRANGE", stream, "-", "+") or {}) do
    local fields = {}
    for i = 1, #e[2], 2 do fields[e[2][i]] = e[2][i + 1] end
    out[#out + 1] = { id = e[1], fields = fields }
  end
  return out
end

describe("weft.redis message trust", function()
  local Q = "trust"
  local SECRET = "correct horse battery staple"
  local server

  before_each(function() server = R.start {} end)
  after_each(cleanup)

  describe("a client and workers that do not share the secret", function()
    it("fails a signed task with kind broken at once when the worker has no secret", function()
      local w = R.worker(server.url, { queue = Q, workers = 1 })
      local ex = redis { url = server.url, queue = Q, secret = SECRET }
      local side = scratch() .. "/side"
      local f = track(ex:submit(function(path) append(path, "ran") return "ran" end, side))
      local err = bounded_exception(f)
      assert.truthy(weft.is(err, "broken"), util.text(err))
      assert.truthy(mentions_any(err, { "worker has no secret" }), util.text(err))
      assert.truthy(mentions_any(err, { "WEFT_SECRET" }), util.text(err))
      w:wait_line({ "refused", "this worker has no secret" })
      assert.is_false(exists(side))
    end)

    it("fails an unsigned task with kind broken at once when the worker has a secret", function()
      R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
      local ex = redis { url = server.url, queue = Q }
      local f = track(ex:submit(function() return "ran" end))
      local err = bounded_exception(f)
      assert.truthy(weft.is(err, "broken"), util.text(err))
      assert.truthy(mentions_any(err, { "not signed" }), util.text(err))
    end)

    it("lets a program whose tasks a worker refuses end, instead of hanging at exit", function()
      R.worker(server.url, { queue = Q, workers = 1, secret = "B" })
      local script = scratch() .. "/main.lua"
      local out = scratch() .. "/out"
      local f = assert(io.open(script, "w"))
      f:write(("package.path = %q\npackage.cpath = %q\n"):format(package.path, package.cpath))
      f:write(([[
        local weft = require "weft"
        local ex = weft.redis { url = %q, queue = %q, secret = "A" }
        ex:submit(function() return 1 end)
        ex:submit(function() return 2 end)
        print("submitted")
      ]]):format(server.url, Q))
      f:close()
      -- Bounded: on a runtime that hangs, `timeout` ends it (status 124).
      local ok, how, status = os.execute(("timeout -k 5 %d lua5.4 %s > %s 2>&1"):format(
        WAIT, util.quote(script), util.quote(out)))
      local text = slurp(out)
      assert.is_true(ok == true, ("%s %s\n%s"):format(how, status, text))
      assert.truthy(text:find("submitted", 1, true), text)
    end)
  end)

  describe("refusals", function()
    it("fail a task written in another message format version, naming it", function()
      local ex = redis { url = server.url, queue = Q }
      local side = scratch() .. "/side"
      local fields, f = capture(server, ex, Q, function(path) append(path, "ran") end, side)
      assert.equal(2, fields.m:byte(4))
      local w = R.worker(server.url, { queue = Q, workers = 1 })
      local newer = fields.m:sub(1, 3) .. "\3" .. fields.m:sub(5)
      local id = server:cmd("XADD", tasks_stream(Q), "*", "m", newer)
      local err = bounded_exception(f)
      assert.truthy(weft.is(err, "broken"), util.text(err))
      assert.truthy(mentions_any(err, { "message format" }), util.text(err))
      assert.truthy(mentions_any(err, { id }), util.text(err))
      w:wait_line({ "refused", id })
      assert.is_false(exists(side))
    end)

    it("reach the client only as the failure of a task it waits for, never as a result", function()
      local ex = redis { url = server.url, queue = Q, secret = SECRET }
      local fields, f = capture(server, ex, Q, function() return "real" end)
      local a = task_address(fields.m)
      local UNSIGNED = 1
      R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
      -- Elements of the client's list are read in order: once a later
      -- task's result is in, the elements pushed before it were read.
      local function after_a_round_trip()
        assert.equal("sync", result(ex:submit(function() return "sync" end)))
      end
      -- An unsigned result, and a notice with another nonce: ignored.
      server:cmd("RPUSH", a.reply, forged_result(a, "forged"))
      server:cmd("RPUSH", a.reply, forged_notice(a, UNSIGNED, string.rep("\0", 16)))
      after_a_round_trip()
      assert.is_false(f:done())
      -- The task runs (its entry put back) and finishes: a notice for it
      -- afterwards changes nothing.
      server:cmd("XADD", tasks_stream(Q), "*", "m", fields.m, "s", fields.s)
      assert.equal("real", result(f))
      server:cmd("RPUSH", a.reply, forged_notice(a, UNSIGNED))
      after_a_round_trip()
      assert.equal("real", f:result(0))
      -- A notice for a task it waits for fails that task, kind broken
      -- (even while a worker runs it).
      local release = scratch() .. "/release"
      local g = track(ex:submit(function(rel) await_file(rel) return "held" end, release))
      local held = R.wait_until("the held task's entry", WAIT, function()
        local e = entries(server, tasks_stream(Q))
        return #e == 1 and e[1].fields
      end)
      local b = task_address(held.m)
      server:cmd("RPUSH", b.reply, forged_notice(b, UNSIGNED))
      local err = bounded_exception(g)
      assert.truthy(weft.is(err, "broken"), util.text(err))
      assert.truthy(mentions_any(err, { "mallory refused" }), util.text(err))
      assert.equal(1, ex:stats().refused)
    end)
  end)

  describe("replays", function()
    it("refuse a signed entry added again after it ran: it runs once", function()
      local ex = redis { url = server.url, queue = Q, secret = SECRET }
      local runs = scratch() .. "/runs"
      local fields, f = capture(server, ex, Q, function(path) append(path, "run\n") return "once" end, runs)
      local w = R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
      server:cmd("XADD", tasks_stream(Q), "*", "m", fields.m, "s", fields.s)
      assert.equal("once", result(f))
      local again = server:cmd("XADD", tasks_stream(Q), "*", "m", fields.m, "s", fields.s)
      w:wait_line({ "refused", again, "replayed" })
      assert.equal("later", result(ex:submit(function() return "later" end)))
      assert.equal(1, count_lines(runs))
      assert.equal(0, ex:stats().refused)   -- (the first entry answered for the task)
    end)

    it("cannot be made from dead letters: they keep no signature", function()
      local ex = redis { url = server.url, queue = Q, secret = SECRET }
      local runs = scratch() .. "/runs"
      local fields, f = capture(server, ex, Q, function(path) append(path, "run\n") return "once" end, runs)
      local w = R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
      server:cmd("XADD", tasks_stream(Q), "*", "m", fields.m, "s", fields.s)
      assert.equal("once", result(f))
      local again = server:cmd("XADD", tasks_stream(Q), "*", "m", fields.m, "s", fields.s)
      w:wait_line({ "refused", again })
      local dead = R.wait_until("the dead letter", WAIT, function()
        local d = entries(server, dead_stream(Q))
        return #d > 0 and d
      end)
      assert.equal(1, #dead)
      local letter = dead[1].fields
      assert.equal(fields.m, letter.m)
      assert.is_nil(letter.s)
      assert.equal("verified", letter.signature)
      assert.truthy(letter.reason:find("replayed", 1, true), letter.reason)
      -- Every field of the dead letter put back: an unsigned entry.
      local flat = {}
      for k, v in pairs(letter) do flat[#flat + 1] = k flat[#flat + 1] = v end
      local back = server:cmd("XADD", tasks_stream(Q), "*", table.unpack(flat))
      w:wait_line({ "refused", back, "unsigned" })
      assert.equal("later", result(ex:submit(function() return "later" end)))
      assert.equal(1, count_lines(runs))
    end)

    it("do not stop a task whose worker died from running again (the same entry, redelivered)", function()
      local ex = redis { url = server.url, queue = Q, secret = SECRET }
      local opts = { queue = Q, workers = 1, claim_idle = 1, heartbeat = 0.2, secret = SECRET }
      local a = R.worker(server.url, named(opts, "first"))
      local dir = scratch()
      local marker, release = dir .. "/attempts", dir .. "/release"
      local f = track(ex:submit(function(path, rel)
        append(path, "run\n")
        await_file(rel)
        return "done"
      end, marker, release))
      R.wait_until("the first attempt", WAIT, function() return count_lines(marker) >= 1 end,
                   R.logs)
      a:kill()
      a:wait_exit(WAIT)
      local b = R.worker(server.url, named(opts, "second"))
      R.wait_until("the second attempt", WAIT, function() return count_lines(marker) >= 2 end,
                   R.logs)
      append(release)
      assert.equal("done", result(f))
      assert.equal(2, f:info().attempts)
      assert.is_nil(b:log():find("refused", 1, true), b:log())
    end)
  end)

  describe("message_ttl", function()
    it("fails a task whose message expired before a worker took it, by the server's clock", function()
      local ex = redis { url = server.url, queue = Q, secret = SECRET, message_ttl = 1 }
      local side = scratch() .. "/side"
      local fields, f = capture(server, ex, Q, function(path) append(path, "ran") end, side)
      local a = task_address(fields.m)
      R.wait_until("the server's clock to pass the task's expiry", WAIT,
                   function() return server_time(server) > a.expires + 0.01 end)
      local w = R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
      local id = server:cmd("XADD", tasks_stream(Q), "*", "m", fields.m, "s", fields.s)
      local err = bounded_exception(f)
      assert.truthy(weft.is(err, "broken"), util.text(err))
      assert.truthy(mentions_any(err, { "expired" }), util.text(err))
      assert.truthy(mentions_any(err, { "message_ttl 1 s" }), util.text(err))
      w:wait_line({ "refused", id, "expired" })
      assert.is_false(exists(side))
      -- A fresh task of the same executor runs.
      assert.equal("fresh", result(ex:submit(function() return "fresh" end)))
    end)

    it("is 24 hours by default", function()
      local ex = redis { url = server.url, queue = Q, secret = SECRET }
      local fields = capture(server, ex, Q, function() return 1 end)
      local left = task_address(fields.m).expires - server_time(server)
      assert.truthy(left > 86400 - WAIT and left <= 86400 + 1, tostring(left))
    end)
  end)
end)

-- =========================================================================

describe("weft.redis faults", function()
  local Q = "faults"
  -- Workers that notice a dead peer's entries quickly.
  local FAST = { queue = Q, workers = 1, claim_idle = 1, heartbeat = 0.2 }

  after_each(cleanup)

  it("runs a task again on another worker when its worker is killed with -9 mid-task", function()
    local server = R.start {}
    local ex = redis { url = server.url, queue = Q }
    local a = R.worker(server.url, named(FAST, "fault-a"))
    local dir = scratch()
    local marker, release = dir .. "/attempts", dir .. "/release"
    -- Each attempt appends the pid of the process that runs it.
    local f = track(ex:submit(function(path, rel)
      append(path, self_pid() .. "\n")
      await_file(rel)
      return "done"
    end, marker, release))
    R.wait_until("the first attempt", WAIT, function() return count_lines(marker) >= 1 end,
                 R.logs)
    local child = math.tointeger(tonumber(lines(marker)[1]))
    a:kill()
    assert.equal(128 + 9, a:wait_exit(WAIT))
    -- The weft worker's own worker process dies with it.
    R.wait_until("the killed worker's child " .. child .. " to die", WAIT,
                 function() return not pid_alive(child) end)
    assert.is_false(f:done())
    R.worker(server.url, named(FAST, "fault-b"))
    append(release)
    assert.equal("done", result(f))
    assert.equal(2, count_lines(marker))
    local info = f:info()
    assert.equal(2, info.attempts)
    assert.truthy(info.worker:find("fault-b", 1, true), info.worker)
    local s = ex:stats()
    assert.equal(1, s.redelivered)
    assert.equal(1, s.completed)
    assert.equal(0, s.failed)
  end)

  it("does not hand a long task on a live worker to another worker", function()
    local server = R.start {}
    local ex = redis { url = server.url, queue = Q }
    R.worker(server.url, named(FAST, "long-a"))
    local dir = scratch()
    local marker, release = dir .. "/attempts", dir .. "/release"
    local f = track(ex:submit(function(path, rel)
      append(path, "run\n")
      await_file(rel)
      return "long"
    end, marker, release))
    R.wait_until("the task to start", WAIT, function() return count_lines(marker) >= 1 end,
                 R.logs)
    R.worker(server.url, named(FAST, "long-b"))   -- idle: would claim an idle entry
    -- Three claim-idle periods: without heartbeats, long-b claims the entry
    -- and runs it a second time within this.
    R.sleep(3)
    append(release)
    assert.equal("long", result(f))
    assert.equal(1, count_lines(marker))
    assert.equal(1, f:info().attempts)
    assert.truthy(f:info().worker:find("long-a", 1, true), f:info().worker)
    assert.equal(0, ex:stats().redelivered)
  end)

  it("refuses malformed entries, logs each one and keeps serving", function()
    local server = R.start {}
    local SECRET = "s3"
    local signed = redis { url = server.url, queue = Q, secret = SECRET }
    local side = scratch() .. "/side"
    local fields = capture(server, signed, Q, function(path) append(path, "ran") end, side)
    local m, s = fields.m, fields.s
    local w = R.worker(server.url, { queue = Q, workers = 1, secret = SECRET })
    local bad = {
      { "m", flip(m, 1), "s", s },              -- the first byte
      { "m", flip(m, #m), "s", s },             -- the last byte
      { "m", m, "s", flip(s) },                 -- the signature
      { "m", m:sub(1, #m // 2), "s", s },       -- truncated
      { "m", m, "s", s:sub(1, 5) },             -- a short signature
      { "m", "", "s", s },                      -- empty
      { "m", "not a weft message", "s", s },
      { "s", s },                               -- no message at all
    }
    for i, entry in ipairs(bad) do
      local id = server:cmd("XADD", tasks_stream(Q), "*", table.unpack(entry))
      w:wait_line({ "refused", id })
      local v = result(signed:submit(function(x) return x end, i))
      assert.equal(i, v)
    end
    assert.is_false(exists(side))
    assert.is_true(w:alive())
  end)

  it("refuses malformed entries on a worker without a secret too", function()
    local server = R.start {}
    local ex = redis { url = server.url, queue = Q }
    local side = scratch() .. "/side"
    local fields = capture(server, ex, Q, function(path) append(path, "ran") end, side)
    local w = R.worker(server.url, { queue = Q, workers = 1 })
    for i, entry in ipairs {
      { "m", fields.m:sub(1, #fields.m // 2) },
      { "m", "" },
      { "m", "not a weft message" },
      { "x", "y" },
    } do
      local id = server:cmd("XADD", tasks_stream(Q), "*", table.unpack(entry))
      w:wait_line({ "refused", id })
      assert.equal(i, result(ex:submit(function(x) return x end, i)))
    end
    assert.is_false(exists(side))
  end)

  it("delivers 1,000 results exactly once while a worker is killed with -9 and one is added", function()
    local server = R.start {}
    local ws = {}
    for i = 1, 4 do ws[i] = R.worker(server.url, named(FAST, "many-" .. i)) end
    local ex = redis { url = server.url, queue = Q }
    local dir = scratch()
    local release = dir .. "/release"
    -- Tasks after the first 100 hold until the release file exists, so
    -- that the kill comes while every worker runs one.
    local function task(i, d, rel)
      if i > 100 and not exists(rel) then
        append(d .. "/held-" .. i)
        await_file(rel)
      end
      return i
    end
    local fs, callbacks = {}, {}
    for i = 1, 1000 do
      local f = track(ex:submit(task, i, dir, release))
      f:add_done_callback(function() callbacks[i] = (callbacks[i] or 0) + 1 end)
      fs[i] = f
    end
    R.wait_until("every worker to hold a task", WAIT,
                 function() return count_files(dir, "held-") >= 4 end,
                 function() return count_files(dir, "held-") .. " held\n" .. R.logs() end)
    ws[1]:kill()
    ws[1]:wait_exit(WAIT)
    ws[5] = R.worker(server.url, named(FAST, "many-5"))
    append(release)
    for i, f in ipairs(fs) do assert.equal(i, result(f)) end
    weft.core.dispatch()
    for i = 1, 1000 do assert.equal(1, callbacks[i], "done callbacks of task " .. i) end
    local s = ex:stats()
    assert.equal(1000, s.submitted)
    assert.equal(1000, s.completed)
    assert.equal(0, s.failed)
    assert.truthy(s.redelivered >= 1, "redelivered = " .. tostring(s.redelivered))
  end)

  it("fails a task that kills its worker at every delivery with kind worker_died after max_deliveries, and dead-letters it", function()
    local server = R.start {}
    local ex = redis { url = server.url, queue = Q, max_deliveries = 2 }
    local runs = scratch() .. "/runs"
    local self_pid = util.self_pid
    local f = track(ex:submit(function(path)
      append(path, "run\n")
      -- kills the whole weft worker (--threads: the task runs in it); an
      -- os.exit would only fail the task (kind exit)
      os.execute("kill -9 " .. self_pid())
    end, runs))
    -- Start a worker each time the last one died, until the task is settled.
    local started = 0
    while not f:done() do
      started = started + 1
      assert(started <= 5, "more workers died than max_deliveries allows:\n" .. R.logs())
      local w = R.worker(server.url, named({ queue = Q, threads = true, workers = 1,
                                             claim_idle = 1, heartbeat = 0.2 },
                                           "doomed-" .. started))
      R.wait_until("the worker to die or the task to fail", WAIT,
                   function() return w:status() ~= nil or f:done() end,
                   R.logs)
    end
    local err = f:exception(0)
    assert.truthy(weft.is(err, "worker_died"), util.text(err))
    assert.equal(2, count_lines(runs))
    assert.equal(1, server:cmd("XLEN", dead_stream(Q)))
    local s = ex:stats()
    assert.equal(1, s.dead_lettered)
    assert.equal(1, s.failed)
  end)

  it("on SIGTERM a worker finishes its running task, takes no new one and exits 0", function()
    local server = R.start {}
    local ex = redis { url = server.url, queue = Q }
    local w = R.worker(server.url, named(FAST, "term-a"))
    local dir = scratch()
    local started, release, later = dir .. "/started", dir .. "/release", dir .. "/later"
    local f = track(ex:submit(function(s, rel)
      append(s)
      await_file(rel)
      return "finished"
    end, started, release))
    R.wait_until("the task to start", WAIT, function() return exists(started) end, R.logs)
    w:term()
    -- The worker says when it has taken the signal; a task submitted from
    -- then on is not for it.
    w:wait_log("stopping")
    local g = track(ex:submit(function(path) append(path) return "later" end, later))
    append(release)
    assert.equal("finished", result(f))
    assert.equal(0, w:wait_exit(WAIT))
    assert.is_false(g:done())
    assert.is_false(exists(later))
    R.worker(server.url, named(FAST, "term-b"))
    assert.equal("later", result(g))
    assert.truthy(g:info().worker:find("term-b", 1, true), g:info().worker)
  end)

  it("fails a task with kind broken, naming the server, when Redis stays away past its timeout", function()
    local server = R.start {}
    local ex = redis { url = server.url, queue = Q }
    -- No worker: the task waits in the stream while the server goes away.
    local f = track(ex:submit(weft.task { function() return 1 end, timeout = 1 }))
    R.wait_until("the task's entry in " .. tasks_stream(Q), WAIT, function()
      return server:cmd("XLEN", tasks_stream(Q)) == 1
    end)
    server:kill()
    local err = util.expect_error("broken", f.result, f, WAIT)
    assert.truthy(util.mentions(err, server.socket), util.text(err))
    assert.truthy(util.mentions(err, "did not come back within the task's timeout"), util.text(err))
    assert.is_false(ex:stats().connected)
  end)

  it("sends again the tasks whose XADDs were lost with the connection", function()
    -- CLIENT PAUSE WRITE holds the executor's XADDs unanswered; killing
    -- its connections then drops them: the sender must send them again
    -- once it has reconnected.
    local server = R.start {}
    local ex = redis { url = server.url, queue = Q }
    server:cmd("CLIENT", "PAUSE", "120000", "WRITE")
    local fs = {}
    for i = 1, 300 do fs[i] = track(ex:submit(function(x) return x + 1 end, i)) end
    R.wait_until("an XADD held by the paused server", WAIT, function()
      return server:cmd("CLIENT", "LIST"):find("cmd=xadd", 1, true)
    end)
    server:cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    server:cmd("CLIENT", "UNPAUSE")
    R.worker(server.url, named(FAST, "resend-a"))
    for i, f in ipairs(fs) do assert.equal(i + 1, result(f)) end
    assert.equal(300, ex:stats().completed)
  end)

  it("delivers a result whose notice on the client's list was lost, from the stored result", function()
    -- A notice BLMPOP takes off the client's list is lost with its reply
    -- when the server dies or the connection breaks in between; the result
    -- stored beside it is not.  Here the client's listener is kept from
    -- popping (its user may not BLMPOP) and the notice is deleted: the
    -- result must arrive all the same, and cancel() must find it done.
    local s = R.start { user = "alice", pass = "pw-3", port = true }
    local url = ("redis://alice:pw-3@127.0.0.1:%d/0"):format(s.port)
    R.worker(url, named(FAST, "notice-a"))
    local ex = redis { url = url, queue = Q }
    assert.equal("warm", result(ex:submit(function() return "warm" end)))
    s:cmd("ACL", "SETUSER", "alice", "-blmpop")
    R.wait_until("the listener's BLMPOP to be refused", WAIT, function()
      for _, entry in ipairs(s:cmd("ACL", "LOG")) do
        for _, v in ipairs(entry) do
          if v == "blmpop" then return true end
        end
      end
    end)
    local f = track(ex:submit(function() return 42 end))
    R.wait_until("the task's stored result", WAIT, function()
      return #s:cmd("KEYS", "weft:" .. Q .. ":result:*") == 2
    end)
    for _, list in ipairs(s:cmd("KEYS", "weft:" .. Q .. ":client:*")) do s:cmd("DEL", list) end
    assert.is_false(f:cancel())
    assert.equal(42, result(f))
    s:cmd("ACL", "SETUSER", "alice", "+blmpop")
    assert.equal("again", result(ex:submit(function() return "again" end)))
    assert.equal(0, ex:stats().failed)
  end)

  it("delivers every result when Redis is killed and restarted from its AOF mid-flow", function()
    local server = R.start { aof = true }
    R.worker(server.url, { queue = Q, workers = 2, claim_idle = 1, heartbeat = 0.2, name = "aof-a" })
    local ex = redis { url = server.url, queue = Q }
    local fs = {}
    for i = 1, 50 do
      fs[i] = track(ex:submit(function(x) os.execute("sleep 0.05") return x * 3 end, i))
    end
    local n = 0
    for _ in weft.as_completed(fs, WAIT) do
      n = n + 1
      if n == 5 then break end
    end
    server:kill()
    server:restart()
    for i, f in ipairs(fs) do assert.equal(i * 3, result(f)) end
    local s = ex:stats()
    assert.equal(50, s.completed)
    assert.equal(0, s.failed)
  end)
end)
