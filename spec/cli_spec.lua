-- The weft program, driven as a subprocess: `weft run` (exit statuses,
-- stdout, stderr, `arg`, executors, log lines, flow summaries, the JSON
-- report, bad input, Ctrl-C) and the informational commands.  The REPL
-- has its own file (repl_spec.lua).
--
-- Nothing here sleeps: a run that must be in progress says so on a FIFO
-- (read with a two-minute bound, which only a broken program reaches), and
-- the spec waits for the program's exit on another FIFO.
local cjson = require "cjson"
local util = require "helpers.util"

local sh_quote, slurp = util.quote, util.read

-- A script file with this source; util.cleanup() removes it.
local function script(source) return util.write_temp(source, ".lua") end

local build = assert(os.getenv("WEFT_BUILD_DIR"), "WEFT_BUILD_DIR is not set (run through scripts/test)")
local WEFT = build .. "/weft/weft"

local function env_prefix(env)
  local parts = {}
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. sh_quote(v) end
  table.sort(parts)
  return table.concat(parts, " ")
end

-- Runs `weft ARGS...` to the end, stdin from /dev/null.  Returns
-- { status = exit status, stdout = ..., stderr = ... }.
local function weft(args, env)
  local out, err = util.tmpname(), util.tmpname()
  local words = {}
  for i, a in ipairs(args) do words[i] = sh_quote(a) end
  local cmd = ("%s %s %s < /dev/null > %s 2> %s"):format(env_prefix(env), WEFT,
    table.concat(words, " "), out, err)
  local _, how, code = os.execute(cmd)
  assert(how == "exit", "weft was killed by signal " .. tostring(code))
  return { status = code, stdout = slurp(out), stderr = slurp(err) }
end

local function lines(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

local function plain(text, what)
  return text:find(what, 1, true) ~= nil
end

-- === background runs, for Ctrl-C =========================================

local keep = {}   -- FIFO handles held open until the process exits

-- A FIFO the spec holds open read-write: writers never block on it, and
-- read_lines(n) returns their lines as they come.
local function fifo()
  local path = util.tmpname()
  assert(os.execute("mkfifo " .. sh_quote(path)))
  keep[#keep + 1] = assert(io.open(path, "r+"))
  return path
end

local function read_lines(path, n)
  local p = assert(io.popen(("timeout 120 head -n %d %s"):format(n, sh_quote(path))))
  local text = p:read("a")
  p:close()
  local got = lines(text)
  assert(#got == n, ("expected %d line(s) on the FIFO, got: %q"):format(n, text))
  return got
end

-- Starts `weft ARGS...` in the background; returns a handle whose
-- :status() waits for the exit status.
local function spawn(args)
  local out, err, rc = util.tmpname(), util.tmpname(), fifo()
  local words = {}
  for i, a in ipairs(args) do words[i] = sh_quote(a) end
  assert(os.execute(("(%s %s < /dev/null > %s 2> %s; echo $? > %s) > /dev/null 2>&1 &")
    :format(WEFT, table.concat(words, " "), out, err, rc)))
  return {
    status = function()
      return tonumber(read_lines(rc, 1)[1])
    end,
    stdout = function() return slurp(out) end,
    stderr = function() return slurp(err) end,
  }
end

-- "R", "S", "Z"... of a process, nil if there is none.
local function process_state(pid)
  local text = slurp("/proc/" .. pid .. "/stat")
  return text and text:match("^%d+ %b() (%a)")
end

local function interrupt(pid)
  assert(os.execute("kill -INT " .. pid))
end

-- Waits until the main thread of pid sleeps: in a script whose only
-- blocking call left is a wait on futures, it is in that wait.
local function wait_sleeping(pid)
  assert(os.execute(("timeout 120 sh -c 'until grep -q \"^[0-9]* ([^)]*) S\" /proc/%d/stat; "
                     .. "do sleep 0.01; done'"):format(pid)))
end

-- === the specs ===========================================================

describe("weft run", function()
  after_each(util.cleanup)

  it("runs a script: exit status 0, its output on stdout, nothing on stderr", function()
    local r = weft { "run", script [[
      local weft = require "weft"
      print("hello", weft.version)
    ]] }
    assert.equal(0, r.status, r.stderr)
    assert.equal("hello\t" .. require("weft").version .. "\n", r.stdout)
    assert.equal("", r.stderr)
  end)

  it("sets arg as lua5.4 does and passes the arguments as ...", function()
    local path = script [[
      local out = {}
      for i = -5, #arg do out[#out + 1] = i .. "=" .. tostring(arg[i]) end
      print(table.concat(out, " "))
      print(select("#", ...), ...)
    ]]
    local r = weft { "run", "--no-progress", "--workers", "2", path, "a", "b c" }
    assert.equal(0, r.status, r.stderr)
    assert.equal(("-5=%s -4=run -3=--no-progress -2=--workers -1=2 0=%s 1=a 2=b c\n2\ta\tb c\n")
                 :format(WEFT, path), r.stdout)
  end)

  it("takes weft's options after FILE too; the rest, and everything after --, goes to the script", function()
    local path = script [[
      local weft = require "weft"
      print(weft.default_executor():stats().workers, table.concat(arg, ","))
    ]]
    local r = weft { "run", path, "x", "--workers", "3", "--flag", "--", "--workers", "9" }
    assert.equal(0, r.status, r.stderr)
    assert.equal("3\tx,--flag,--workers,9\n", r.stdout)
  end)

  it("takes a FILE that starts with '-' after --", function()
    local dir = util.tmpname()
    assert(os.execute("mkdir " .. dir))
    local f = assert(io.open(dir .. "/-odd.lua", "w"))
    f:write("print(arg[-1], arg[0], ...)")
    f:close()
    local out = util.tmpname()
    assert.is_true(os.execute(("cd %s && %s run -- -odd.lua --workers > %s 2>&1"):format(dir, WEFT, out)))
    os.remove(dir .. "/-odd.lua")
    os.remove(dir)
    assert.equal("--\t-odd.lua\t--workers\n", slurp(out))
  end)

  it("reads the script from standard input for '-'", function()
    local out = util.tmpname()
    local ok = os.execute(("echo 'print(arg[0], ...)' | %s run - a b > %s 2>&1"):format(WEFT, out))
    assert.is_true(ok)
    assert.equal("-\ta\tb\n", slurp(out))
  end)

  it("exits 1 with the error and its traceback on stderr when the script raises", function()
    local r = weft { "run", script [[
      local function inner() error("the script broke") end
      inner()
    ]] }
    assert.equal(1, r.status)
    assert.equal("", r.stdout)
    assert.truthy(r.stderr:match("^weft: [^\n]*%.lua:1: the script broke\nstack traceback:\n"), r.stderr)
    assert.truthy(plain(r.stderr, "in local 'inner'"), r.stderr)
  end)

  it("prints a weft.Error through its __tostring, with the worker's traceback", function()
    local r = weft { "run", script [[
      local weft = require "weft"
      local ex <close> = weft.threads { workers = 1 }
      ex:submit(function() error("worker trouble") end):result()
    ]] }
    assert.equal(1, r.status)
    assert.truthy(plain(r.stderr, "worker trouble"), r.stderr)
    assert.truthy(plain(r.stderr, "[task]"), r.stderr)
  end)

  it("exits 1 when a flow failed, though the script did not raise", function()
    local r = weft { "run", script [[
      local weft = require "weft"
      local bad = weft.task { function() error("no luck") end, name = "bad" }
      local run = weft.flow({ function() return bad() end, name = "unlucky" }):run()
      print(run.state)
    ]] }
    assert.equal(1, r.status, r.stderr)
    assert.equal("failed\n", r.stdout)
  end)

  it("exits 0 when the failed flow was a subflow its parent got over", function()
    local r = weft { "run", script [[
      local weft = require "weft"
      local bad = weft.task { function() error("no luck") end, name = "bad" }
      local inner = weft.flow { function() return bad() end, name = "inner" }
      local outer = weft.flow { function() return inner:run().state end, name = "outer" }
      print(outer:run().result)
    ]] }
    assert.equal(0, r.status, r.stderr)
    assert.equal("failed\n", r.stdout)
  end)

  describe("bad input: exit 2, one line on stderr naming the problem", function()
    local function check(args, env, want)
      local r = weft(args, env)
      assert.equal(2, r.status, r.stderr)
      assert.equal("", r.stdout)
      local l = lines(r.stderr)
      assert.equal(1, #l, r.stderr)
      assert.truthy(plain(l[1], want), ("%q does not mention %q"):format(l[1], want))
      assert.truthy(l[1]:match("^weft: "), l[1])
    end

    local ok_script
    before_each(function() ok_script = script "print('ran')" end)

    it("a syntax error", function()
      check({ "run", script "local x = = 1" }, nil, "unexpected symbol near '='")
    end)
    it("a missing file", function()
      check({ "run", "/nonexistent/flow.lua" }, nil, "cannot open /nonexistent/flow.lua")
    end)
    it("an unknown option", function()
      check({ "run", "--fast", ok_script }, nil, "unknown option '--fast'")
    end)
    it("an option without its value", function()
      check({ "run", ok_script, "--report" }, nil, "--report needs a value")
    end)
    it("no script", function()
      check({ "run", "--no-progress" }, nil, "no script given")
    end)
    it("an invalid executor spec", function()
      check({ "run", "--executor", "gpu:3", ok_script }, nil, "--executor: unknown executor spec \"gpu:3\"")
    end)
    it("an invalid WEFT_EXECUTOR", function()
      check({ "run", ok_script }, { WEFT_EXECUTOR = "threads:none" }, "WEFT_EXECUTOR: bad worker count")
    end)
    it("a bad --workers", function()
      check({ "run", "--workers", "0", ok_script }, nil, "--workers: expected a positive integer, got '0'")
      check({ "run", "--workers=4", "--executor=inline", ok_script }, nil, "inline executor has no workers")
    end)
    it("a bad --log-level", function()
      check({ "run", "--log-level", "loud", ok_script }, nil, "--log-level: unknown level 'loud'")
    end)
    it("a report that cannot be written", function()
      check({ "run", "--report", "/nonexistent/dir/r.json", ok_script }, nil,
            "--report: cannot write /nonexistent/dir/r.json")
    end)
    it("an unknown command", function()
      check({ "flow.lua" }, nil, "unknown command 'flow.lua' (to run a script: weft run flow.lua)")
    end)
  end)

  describe("executors", function()
    -- Prints the default executor's kind and workers, and where a flow's task ran.
    local probe = [[
      local weft = require "weft"
      local where = weft.task { function() return 1 end, name = "where" }
      local run = weft.flow({ function() return where() end, name = "probe" }):run()
      print(run.tasks[1].worker:match("^%a+"), weft.default_executor():stats().workers)
    ]]

    it("threads with one worker per CPU by default", function()
      local r = weft { "run", script(probe) }
      assert.equal(0, r.status, r.stderr)
      assert.equal(("thread\t%d\n"):format(util.online_cpus()), r.stdout)
    end)

    it("WEFT_EXECUTOR sets it; --executor and --workers override it", function()
      local path = script(probe)
      local r = weft({ "run", path }, { WEFT_EXECUTOR = "processes:2" })
      assert.equal(0, r.status, r.stderr)
      assert.equal("process\t2\n", r.stdout)
      r = weft({ "run", "--executor", "threads:3", path }, { WEFT_EXECUTOR = "processes:2" })
      assert.equal("thread\t3\n", r.stdout)
      r = weft({ "run", "--workers", "1", path }, { WEFT_EXECUTOR = "processes:2" })
      assert.equal("process\t1\n", r.stdout)
      r = weft { "run", "--executor", "inline", path }
      assert.equal("inline\t1\n", r.stdout)
    end)
  end)

  describe("log records", function()
    local logging = [[
      local weft = require "weft"
      local chatty = weft.task { function(x)
        local log = require("weft").log
        log.debug("debug from item %d", x)
        log.info("info from item %d", x)
        log.warn("warn from item %d", x)
        return x
      end, name = "chatty" }
      weft.log.info("from the script")
      weft.flow({ function() return chatty(7) end, name = "talk" }):run()
    ]]

    it("go to stderr with time, level, flow/task#attempt and worker", function()
      local r = weft { "run", "--no-progress", "--executor", "processes:1", script(logging) }
      assert.equal(0, r.status, r.stderr)
      assert.equal("", r.stdout)
      local l = lines(r.stderr)
      assert.truthy(l[1]:match("^%d%d:%d%d:%d%d%.%d%d%d INFO  from the script$"), l[1])
      assert.truthy(l[2]:match("^%d%d:%d%d:%d%d%.%d%d%d INFO  %[talk/chatty#1 on process %d+%] info from item 7$"), l[2])
      assert.truthy(l[3]:match("WARN  %[talk/chatty#1 on process %d+%] warn from item 7$"), l[3])
      assert.equal(3, #l, r.stderr)
    end)

    it("--log-level sets the threshold, in the workers too", function()
      local path = script(logging)
      local r = weft { "run", "--no-progress", "--log-level", "warn", "--executor", "threads:1", path }
      assert.equal(0, r.status, r.stderr)
      local l = lines(r.stderr)
      assert.equal(1, #l, r.stderr)
      assert.truthy(plain(l[1], "WARN  [talk/chatty#1 on thread 1] warn from item 7"), l[1])
      r = weft { "run", "--no-progress", "--log-level", "debug", "--executor", "processes:1", path }
      assert.truthy(r.stderr:match("DEBUG %[talk/chatty#1 on process %d+%] debug from item 7"), r.stderr)
    end)
  end)

  describe("progress", function()
    local two_flows = [[
      local weft = require "weft"
      local ok = weft.task { function(x) return x end, name = "ok" }
      local flaky = weft.task { function(path)
        local f = io.open(path, "a") f:write("x") f:close()
        if #io.open(path):read("a") < 2 then error("first attempt fails") end
        return true
      end, name = "flaky", retries = 1 }
      local first = weft.flow { function(path) ok:map { 1, 2, 3 } return flaky(path) end, name = "first" }
      local second = weft.flow { function() return ok(1) end, name = "second" }
      first:run(arg[1])
      second:run()
      print("done")
    ]]

    it("prints a summary table after each flow run, and no live line off a terminal", function()
      local r = weft { "run", script(two_flows), util.tmpname() }
      assert.equal(0, r.status, r.stderr)
      assert.equal("done\n", r.stdout)
      local l = lines(r.stderr)
      assert.truthy(l[1]:match("^flow first: completed in %S+ %(4 task runs, 0 not completed%)$"), l[1])
      assert.truthy(l[2]:match("^  task%s+state%s+runs%s+attempts%s+duration$"), l[2])
      assert.truthy(l[3]:match("^  ok%s+completed%s+3%s+3%s+%S+s$"), l[3])
      assert.truthy(l[4]:match("^  flaky%s+completed%s+1%s+2%s+%S+s$"), l[4])
      assert.truthy(l[5]:match("^flow second: completed in %S+ %(1 task run, 0 not completed%)$"), l[5])
      assert.equal(7, #l, r.stderr)
      assert.is_nil(r.stderr:find("\r", 1, true))
      assert.is_nil(r.stderr:find("\27", 1, true))
    end)

    it("names a failed flow's error under its table", function()
      local r = weft { "run", script [[
        local weft = require "weft"
        local bad = weft.task { function() error("no luck") end, name = "bad" }
        weft.flow({ function() return bad() end, name = "unlucky" }):run()
      ]] }
      assert.equal(1, r.status)
      assert.truthy(r.stderr:match("flow unlucky: failed in"), r.stderr)
      assert.truthy(r.stderr:match("\n  bad%s+failed%s+1%s+1%s"), r.stderr)
      assert.truthy(r.stderr:match("\n  error: [^\n]*no luck"), r.stderr)
    end)

    it("--no-progress drops the summaries", function()
      local r = weft { "run", "--no-progress", script(two_flows), util.tmpname() }
      assert.equal(0, r.status, r.stderr)
      assert.equal("done\n", r.stdout)
      assert.equal("", r.stderr)
    end)
  end)

  describe("--report", function()
    it("writes every flow run with every task run, the status and the executor", function()
      local report = util.tmpname()
      local path = script [[
        local weft = require "weft"
        local ok = weft.task { function(x) return x end, name = "ok" }
        local bad = weft.task { function() error("gave up") end, name = "bad", retries = 1 }
        weft.flow({ function() ok(1) return bad() end, name = "mixed" }):run()
        weft.flow({ function() return 42 end, name = "empty" }):run()
      ]]
      local before = os.time()
      local r = weft { "run", "--report", report, "--executor", "threads:2", path, "one" }
      local after = os.time()
      assert.equal(1, r.status, r.stderr)
      local text = slurp(report)
      local doc = cjson.decode(text)
      assert.equal("completed", doc.status)      -- the script itself returned
      assert.equal(1, doc.exit_code)
      assert.equal("threads:2", doc.executor)
      assert.equal(path, doc.script)
      assert.same({ "one" }, doc.args)
      assert.equal(cjson.null, doc.error)
      assert.is_true(doc.started >= before - 1 and doc.finished <= after + 1)
      assert.equal(2, #doc.flows)

      local mixed = doc.flows[1]
      assert.equal("mixed", mixed.name)
      assert.equal("failed", mixed.state)
      assert.equal("task", mixed.error.kind)
      assert.equal(2, #mixed.tasks)
      local good, failed = mixed.tasks[1], mixed.tasks[2]
      assert.equal("ok", good.name)
      assert.equal("completed", good.state)
      assert.equal(1, good.attempts)
      assert.truthy(good.worker:match("^thread %d$"), good.worker)
      assert.is_true(good.start >= mixed.started and good.finish <= mixed.finished)
      assert.near(good.finish - good.start, good.duration, 1e-3)
      assert.equal(cjson.null, good.error)
      assert.equal("bad", failed.name)
      assert.equal("failed", failed.state)
      assert.equal(2, failed.attempts)
      assert.equal("task", failed.error.kind)
      assert.truthy(plain(failed.error.message, "gave up"), failed.error.message)
      assert.truthy(plain(failed.error.traceback, "stack traceback"), failed.error.traceback)

      local empty = doc.flows[2]
      assert.equal("completed", empty.state)
      assert.truthy(plain(text, '"tasks":[]'), "an empty list is a JSON array: " .. text)
    end)

    it("records a script error with its traceback, and exit status 1", function()
      local report = util.tmpname()
      local r = weft { "run", "--report", report, script "error('late failure')" }
      assert.equal(1, r.status)
      local doc = cjson.decode(slurp(report))
      assert.equal("error", doc.status)
      assert.equal(1, doc.exit_code)
      assert.truthy(doc.error:match("late failure\nstack traceback:"), doc.error)
      assert.truthy(slurp(report):find('"flows":[]', 1, true))
    end)
  end)

  it("finishes before os.exit: the report says exited, with the script's status", function()
    local report = util.tmpname()
    local r = weft { "run", "--report", report, script [[
      local weft = require "weft"
      weft.flow({ function() return 1 end, name = "quick" }):run()
      os.exit(3)
    ]] }
    assert.equal(3, r.status, r.stderr)
    local doc = cjson.decode(slurp(report))
    assert.equal("exited", doc.status)
    assert.equal(3, doc.exit_code)
    assert.equal("quick", doc.flows[1].name)
  end)

  describe("Ctrl-C", function()
    after_each(function()
      for _, f in ipairs(keep) do f:close() end
      keep = {}
    end)

    it("stops the flow's tasks, prints the summary, exits 130 and leaves no worker", function()
      local marks, report = fifo(), util.tmpname()
      local run = spawn { "run", "--executor", "processes:2", "--report", report, script [[
        local weft = require "weft"
        local marks = arg[1]
        local function mark(what)
          local f = io.open(marks, "w")
          f:write(what, " ", io.open("/proc/self/stat"):read("n"), "\n")
          f:close()
        end
        local spin = weft.task { function(mark)
          mark("worker")
          while true do end
        end, name = "spin" }
        local forever = weft.flow { function() return spin:map { mark, mark } end, name = "forever" }
        mark("main")
        forever:run()
        print("not reached")
      ]], marks }
      local pids = {}
      for _, line in ipairs(read_lines(marks, 3)) do
        local what, pid = line:match("^(%a+) (%d+)$")
        pids[#pids + 1] = { what = what, pid = pid }
      end
      table.sort(pids, function(a, b) return a.what < b.what end)   -- main first
      assert.equal("main", pids[1].what)
      wait_sleeping(pids[1].pid)                  -- in flow:run's wait
      interrupt(pids[1].pid)
      assert.equal(130, run.status())
      assert.equal("", run.stdout())
      local err = run.stderr()
      assert.truthy(err:match("flow forever: failed in"), err)
      assert.truthy(err:match("\n  spin%s+cancelled%s+2%s"), err)
      assert.truthy(err:match("weft: interrupted\n$"), err)
      for i = 2, 3 do
        assert.equal("worker", pids[i].what)
        assert.is_nil(process_state(pids[i].pid), "worker " .. pids[i].pid .. " is still there")
      end
      local doc = cjson.decode(slurp(report))
      assert.equal("interrupted", doc.status)
      assert.equal(130, doc.exit_code)
      assert.equal("cancelled", doc.flows[1].tasks[1].state)
      assert.equal("cancelled", doc.flows[1].tasks[2].state)
    end)

    it("is not swallowed by a done-callback that runs when it comes", function()
      local run = spawn { "run", "--no-progress", script [[
        local weft = require "weft"
        local pid = io.open("/proc/self/stat"):read("n")
        local ex = weft.threads { workers = 2 }
        local quick = ex:submit(function() return 1 end)
        local forever = ex:submit(function() while true do end end)
        quick:add_done_callback(function()
          io.popen("kill -INT " .. pid):close()   -- Ctrl-C while this callback runs
          for _ = 1, 1e6 do end
          io.stderr:write("callback finished\n")
        end)
        local ok, err = pcall(forever.result, forever)   -- runs the callback, then
        print(weft.is(err, "cancelled"), forever:state())  -- raises the interrupt
        error(err, 0)
      ]] }
      assert.equal(130, run.status())
      assert.equal("true\tcancelled\n", run.stdout())
      local err = run.stderr()
      assert.truthy(err:find("callback finished", 1, true), err)
      assert.falsy(err:find("ignored", 1, true), err)
    end)

    it("a second Ctrl-C exits at once", function()
      local marks, report = fifo(), util.tmpname()
      local run = spawn { "run", "--report", report, script [[
        local marks = arg[1]
        local function mark(what)
          local f = io.open(marks, "w")
          f:write(what, " ", io.open("/proc/self/stat"):read("n"), "\n")
          f:close()
        end
        pcall(function()                           -- the first Ctrl-C ends this
          mark("main")
          while true do end
        end)
        mark("caught")
        while true do end                          -- only a second one ends this
      ]], marks }
      local pid = read_lines(marks, 1)[1]:match("^main (%d+)$")
      interrupt(pid)
      assert.equal("caught " .. pid, read_lines(marks, 1)[1])
      interrupt(pid)
      assert.equal(130, run.status())
      assert.equal("\n", run.stderr())        -- no summary, no message: at once
      assert.equal("", slurp(report))         -- the report was never written
    end)
  end)
end)

describe("weft", function()
  after_each(util.cleanup)

  it("--version prints the version", function()
    local r = weft { "--version" }
    assert.equal(0, r.status)
    assert.equal(("weft %s (%s)\n"):format(require("weft").version, "Lua 5.4." ..
      r.stdout:match("Lua 5%.4%.(%d+)")), r.stdout)
  end)

  for _, args in ipairs { { "--help" }, { "run", "--help" }, { "repl", "--help" } } do
    it(table.concat(args, " ") .. " prints its usage on stdout", function()
      local r = weft(args)
      assert.equal(0, r.status)
      assert.equal("", r.stderr)
      assert.truthy(r.stdout:match("^usage: weft"), r.stdout)
    end)
  end

  it("with no arguments and no terminal runs standard input, as lua5.4 does", function()
    local out = util.tmpname()
    assert.is_true(os.execute(("echo 'print(weft, require(\"weft\").version)' | %s > %s 2>&1")
      :format(WEFT, out)))
    assert.equal("nil\t" .. require("weft").version .. "\n", slurp(out))
  end)
end)
