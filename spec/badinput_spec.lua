-- Bad input to every public function of the Lua API (API.md): wrong types,
-- nil, numbers out of range (negative, NaN, inf, huge, non-integer), huge
-- strings and tables.  Each must raise a weft.Error of a clear kind (config
-- for a bad argument or option) whose message names the argument or
-- option: never a crash, a hang or a silent acceptance.
--
-- One `it` per function, listing its cases: { label, call, kind, word }.
-- Every case of a function runs (under a 20 s guard, so a hang fails the
-- case instead of the file) before the `it` reports all the cases that
-- went wrong at once.

local weft = require "weft"

local NAN, INF = 0 / 0, math.huge
local MAXINT = math.maxinteger
local noop = function() end

-- Runs the cases; fails with one line per case that did not raise a
-- weft.Error of its kind whose message contains its word.
local function check(cases)
  local wrong = {}
  for _, case in ipairs(cases) do
    local label, call, kind, word = case[1], case[2], case[3], case[4]
    local ok, err = pcall(weft.timeout.call, 20, call)
    local why
    if ok then
      why = "accepted (no error)"
    elseif weft.is(err, "timeout") and not (kind == "timeout") then
      why = "hung (still running after 20 s)"
    elseif not weft.is(err) then
      why = "raised a " .. type(err) .. ", not a weft.Error: " .. tostring(err)
    elseif err.kind ~= kind then
      why = ("raised kind %s, not %s: %s"):format(err.kind, kind, tostring(err.message))
    elseif not tostring(err.message):find(word, 1, true) then
      why = ("message does not name %q: %s"):format(word, tostring(err.message))
    end
    if why then wrong[#wrong + 1] = label .. ": " .. why end
  end
  assert(#wrong == 0, #wrong .. " of " .. #cases .. " cases went wrong:\n  "
         .. table.concat(wrong, "\n  "))
end

-- Cases for an option `name` of `make(opts)` taking each of `values`.
local function option_cases(cases, what, make, name, values, word)
  for _, v in ipairs(values) do
    local label = ("%s{%s = %s}"):format(what, name, type(v) == "string" and ("%q"):format(v)
                                         or tostring(v))
    cases[#cases + 1] = { label, function() return make { [name] = v } end, "config",
                          word or name }
  end
  return cases
end

-- Values that are not a number of seconds >= 0.
local BAD_SECONDS = { -1, -INF, NAN, "1", true, {}, noop }
-- Values that are not a positive integer.
local BAD_COUNTS = { 0, -1, 1.5, NAN, INF, -INF, "2", true, {} }

-- A string of n bytes.
local function big_string(n) return string.rep("x", n) end

local ex               -- a threads pool shared by the cases below
local done, failed, cancelled, pending

setup(function()
  ex = weft.threads { workers = 1 }
  done = weft.future()
  done:set_running_or_notify_cancel()
  done:set_result(1)
  failed = weft.future()
  failed:set_running_or_notify_cancel()
  failed:set_exception("upstream broke")
  failed:exception()               -- (retrieved: not reported at collection)
  cancelled = weft.future()
  cancelled:cancel()
end)

teardown(function()
  ex:shutdown()
  if pending and not pending:done() then pending:set_result(nil) end
end)

before_each(function()
  if pending and not pending:done() then pending:set_result(nil) end
  pending = weft.future()
end)

describe("executor constructors", function()
  it("weft.inline rejects a bad option table", function()
    local cases = {
      { "weft.inline(42)", function() return weft.inline(42) end, "config", "options" },
      { "weft.inline('x')", function() return weft.inline("x") end, "config", "options" },
      { "weft.inline{workers = 2}", function() return weft.inline { workers = 2 } end,
        "config", "workers" },
      { "weft.inline{name = 42}", function() return weft.inline { name = 42 } end,
        "config", "name" },
    }
    option_cases(cases, "weft.inline", weft.inline, "timeout", BAD_SECONDS)
    check(cases)
  end)

  it("weft.threads rejects bad workers, init, init_args, timeout, name", function()
    local cases = {
      { "weft.threads(42)", function() return weft.threads(42) end, "config", "options" },
      { "weft.threads{bogus = 1}", function() return weft.threads { bogus = 1 } end,
        "config", "bogus" },
      { "weft.threads{[1] = 4}", function() return weft.threads { 4 } end,
        "config", "unknown option 1" },
      { "weft.threads{workers = 5000}", function() return weft.threads { workers = 5000 } end,
        "config", "workers" },
      { "weft.threads{workers = maxinteger}",
        function() return weft.threads { workers = MAXINT } end, "config", "workers" },
      { "weft.threads{workers = 2^53}", function() return weft.threads { workers = 2 ^ 53 } end,
        "config", "workers" },
      { "weft.threads{init_args = a huge list}", function()
          local args = {}
          for i = 1, 2000000 do args[i] = i end
          return weft.threads { workers = 1, init = noop, init_args = args }
        end, "config", "init_args" },
    }
    option_cases(cases, "weft.threads", weft.threads, "workers", BAD_COUNTS)
    option_cases(cases, "weft.threads", weft.threads, "init", { 42, "print", {}, true })
    option_cases(cases, "weft.threads", weft.threads, "init_args", { 42, "x", noop, true })
    option_cases(cases, "weft.threads", weft.threads, "timeout", BAD_SECONDS)
    option_cases(cases, "weft.threads", weft.threads, "name", { 42, {}, noop, true })
    check(cases)
  end)

  it("weft.processes rejects bad workers, timeout, max_tasks_per_worker, kill_grace, worker_path",
     function()
    local cases = {
      { "weft.processes(42)", function() return weft.processes(42) end, "config", "options" },
      { "weft.processes{bogus = 1}", function() return weft.processes { bogus = 1 } end,
        "config", "bogus" },
      { "weft.processes{workers = 5000}",
        function() return weft.processes { workers = 5000 } end, "config", "workers" },
      { "weft.processes{worker_path = a missing file}",
        function() return weft.processes { workers = 1, worker_path = "/nonexistent/w" } end,
        "config", "worker_path" },
      { "weft.processes{worker_path = a huge string}",
        function() return weft.processes { workers = 1, worker_path = big_string(1e6) } end,
        "config", "worker_path" },
    }
    option_cases(cases, "weft.processes", weft.processes, "workers", BAD_COUNTS)
    option_cases(cases, "weft.processes", weft.processes, "init", { 42, "print" })
    option_cases(cases, "weft.processes", weft.processes, "init_args", { 42, "x" })
    option_cases(cases, "weft.processes", weft.processes, "timeout", BAD_SECONDS)
    option_cases(cases, "weft.processes", weft.processes, "kill_grace", BAD_SECONDS)
    option_cases(cases, "weft.processes", weft.processes, "max_tasks_per_worker", BAD_COUNTS)
    option_cases(cases, "weft.processes", weft.processes, "worker_path", { 42, {}, true })
    option_cases(cases, "weft.processes", weft.processes, "name", { 42, {} })
    check(cases)
  end)

  -- Shared by weft.executor and weft.set_default_executor.
  local BAD_SPECS = {
    { "nil", nil, "spec" }, { "42", 42, "spec" }, { "a table", {}, "spec" },
    { "a function", noop, "spec" }, { "true", true, "spec" },
    { '""', "", "spec" }, { '"bogus"', "bogus", "bogus" }, { '"THREADS"', "THREADS", "THREADS" },
    { '"threads:"', "threads:", "threads:" }, { '"threads:0"', "threads:0", "workers" },
    { '"threads:-1"', "threads:-1", "threads:-1" }, { '"threads:1.5"', "threads:1.5", "threads:1.5" },
    { '"threads:abc"', "threads:abc", "threads:abc" },
    { '"threads:5000"', "threads:5000", "workers" },
    { '"threads:99999999999999999999"', "threads:99999999999999999999", "threads:9999" },
    { '"processes:x"', "processes:x", "processes:x" }, { '"inline:2"', "inline:2", "inline:2" },
    { '"threads 4"', "threads 4", "threads 4" }, { '"redis://"', "redis://", "no host" },
    { '"redis://h:99999/0"', "redis://h:99999/0", "port" },
    { "a huge string", big_string(1e6), "spec" },
  }

  it("weft.executor rejects a bad spec", function()
    local cases = {}
    for _, s in ipairs(BAD_SPECS) do
      cases[#cases + 1] = { "weft.executor(" .. s[1] .. ")",
                            function() return weft.executor(s[2]) end, "config", s[3] }
    end
    check(cases)
  end)

  it("weft.set_default_executor rejects a bad spec and keeps the one it had", function()
    local before = weft.default_executor()
    local cases = {}
    for _, s in ipairs(BAD_SPECS) do
      if s[2] ~= nil then     -- (nil is valid here: back to WEFT_EXECUTOR)
        cases[#cases + 1] = { "weft.set_default_executor(" .. s[1] .. ")",
                              function() return weft.set_default_executor(s[2]) end,
                              "config", s[3] }
      end
    end
    check(cases)
    assert.equal(before, weft.default_executor())
  end)
end)

describe("executor methods", function()
  it("ex:submit rejects what is not a task, and values that cannot be copied", function()
    local deep = {}
    local t = deep
    for _ = 1, 5000 do t[1] = {} t = t[1] end
    check {
      { "ex:submit()", function() return ex:submit() end, "config", "task" },
      { "ex:submit(nil)", function() return ex:submit(nil) end, "config", "task" },
      { "ex:submit(42)", function() return ex:submit(42) end, "config", "task" },
      { "ex:submit('print')", function() return ex:submit("print") end, "config", "task" },
      { "ex:submit({})", function() return ex:submit({}) end, "config", "task" },
      { "ex:submit(a coroutine)",
        function() return ex:submit(coroutine.create(noop)) end, "config", "task" },
      { "ex:submit(fn, io.stdout)", function() return ex:submit(noop, io.stdout) end,
        "serialization", "argument 1" },
      { "ex:submit(fn, 1, {h = a coroutine})",
        function() return ex:submit(noop, 1, { h = coroutine.create(noop) }) end,
        "serialization", "argument 2" },
      { "ex:submit(fn, a table nested 5000 deep)", function() return ex:submit(noop, deep) end,
        "serialization", "argument 1" },
      { "ex:submit(a function with a userdata upvalue)", function()
          local h = io.stdout
          return ex:submit(function() return h end)
        end, "serialization", "upvalue" },
      { "weft.Executor.submit(42, fn)", function() return weft.Executor.submit(42, noop) end,
        "config", "executor" },
      { "ex.submit(fn) (a dot for a colon)", function() return ex.submit(noop) end,
        "config", "executor" },
    }
  end)

  it("ex:map rejects a bad task, items and options", function()
    local cases = {
      { "ex:map(42, {1})", function() return ex:map(42, { 1 }) end, "config", "task" },
      { "ex:map(nil, {1})", function() return ex:map(nil, { 1 }) end, "config", "task" },
      { "ex:map(fn, nil)", function() return ex:map(noop, nil) end, "config", "items" },
      { "ex:map(fn, 42)", function() return ex:map(noop, 42) end, "config", "items" },
      { "ex:map(fn, 'abc')", function() return ex:map(noop, "abc") end, "config", "items" },
      { "ex:map(fn, {1}, 42)", function() return ex:map(noop, { 1 }, 42) end,
        "config", "options" },
      { "ex:map(fn, {1}, {bogus = 1})", function() return ex:map(noop, { 1 }, { bogus = 1 }) end,
        "config", "bogus" },
      { "weft.Executor.map(42, fn, {1})",
        function() return weft.Executor.map(42, noop, { 1 }) end, "config", "executor" },
    }
    local function map_with(opts) return ex:map(noop, { 1, 2 }, opts) end
    option_cases(cases, "ex:map", map_with, "timeout", BAD_SECONDS)
    option_cases(cases, "ex:map", map_with, "chunksize", BAD_COUNTS)
    option_cases(cases, "ex:map", map_with, "window", BAD_COUNTS)
    check(cases)
  end)

  it("ex:shutdown rejects a bad option table, then submit and map raise kind shutdown", function()
    local closed = weft.threads { workers = 1 }
    check {
      { "ex:shutdown(42)", function() return closed:shutdown(42) end, "config", "shutdown" },
      { "ex:shutdown('now')", function() return closed:shutdown("now") end,
        "config", "shutdown" },
      { "weft.Executor.shutdown(42)", function() return weft.Executor.shutdown(42) end,
        "config", "executor" },
    }
    closed:shutdown()
    check {
      { "submit after shutdown", function() return closed:submit(noop) end, "shutdown", "submit" },
      { "map after shutdown", function() return closed:map(noop, { 1 }) end, "shutdown", "map" },
    }
  end)

  it("ex:stats rejects what is not an executor", function()
    check {
      { "weft.Executor.stats(42)", function() return weft.Executor.stats(42) end,
        "config", "executor" },
      { "weft.Executor.stats()", function() return weft.Executor.stats() end,
        "config", "executor" },
      { "ex.stats() (a dot for a colon)", function() return ex.stats() end,
        "config", "executor" },
    }
  end)
end)

describe("futures", function()
  local function waits(name)
    local cases = {}
    for _, s in ipairs(BAD_SECONDS) do
      cases[#cases + 1] = { ("f:%s(%s)"):format(name, tostring(s)),
                            function() return pending[name](pending, s) end, "config", "timeout" }
    end
    cases[#cases + 1] = { ("weft.Future.%s(42)"):format(name),
                          function() return weft.Future[name](42) end, "config", "future" }
    cases[#cases + 1] = { ("f.%s() (a dot for a colon)"):format(name),
                          function() return pending[name]() end, "config", "future" }
    return cases
  end

  it("f:result rejects a bad timeout and what is not a future", function()
    check(waits("result"))
  end)

  it("f:exception rejects a bad timeout and what is not a future", function()
    check(waits("exception"))
  end)

  it("f:cancel rejects a bad option", function()
    check {
      { "f:cancel(42)", function() return pending:cancel(42) end, "config", "cancel" },
      { "f:cancel('force')", function() return pending:cancel("force") end, "config", "cancel" },
      { "f:cancel(true)", function() return pending:cancel(true) end, "config", "cancel" },
      { "weft.Future.cancel(42)", function() return weft.Future.cancel(42) end,
        "config", "future" },
    }
    assert.is_false(pending:cancelled())
  end)

  it("f:add_done_callback rejects what is not callable", function()
    local cases = {}
    for _, cb in ipairs { false, 42, "print", {}, true } do
      cases[#cases + 1] = { "f:add_done_callback(" .. tostring(cb) .. ")",
                            function() return pending:add_done_callback(cb) end,
                            "config", "callback" }
    end
    cases[#cases + 1] = { "f:add_done_callback()",
                          function() return pending:add_done_callback() end, "config", "callback" }
    cases[#cases + 1] = { "weft.Future.add_done_callback(42, fn)",
                          function() return weft.Future.add_done_callback(42, noop) end,
                          "config", "future" }
    check(cases)
  end)

  it("the set_* methods of a bare future refuse an invalid transition", function()
    check {
      { "set_result on a done future", function() return done:set_result(2) end,
        "invalid_state", "already" },
      { "set_exception on a done future", function() return done:set_exception("x") end,
        "invalid_state", "already" },
      { "set_running_or_notify_cancel on a done future",
        function() return done:set_running_or_notify_cancel() end, "invalid_state", "running" },
      { "set_result on a cancelled future", function() return cancelled:set_result(2) end,
        "invalid_state", "already" },
      { "set_running_or_notify_cancel twice", function()
          local f = weft.future()
          f:set_running_or_notify_cancel()
          f:set_running_or_notify_cancel()
        end, "invalid_state", "running" },
      { "weft.Future.set_result(42, 1)", function() return weft.Future.set_result(42, 1) end,
        "config", "future" },
    }
  end)

  it("the state queries reject what is not a future", function()
    local cases = {}
    for _, name in ipairs { "done", "running", "cancelled", "state", "attempts", "info" } do
      cases[#cases + 1] = { ("weft.Future.%s(42)"):format(name),
                            function() return weft.Future[name](42) end, "config", "future" }
      cases[#cases + 1] = { ("weft.Future.%s({})"):format(name),
                            function() return weft.Future[name]({}) end, "config", "future" }
    end
    check(cases)
  end)
end)

describe("waiting", function()
  it("weft.wait rejects a bad list, timeout and return_when", function()
    local cases = {
      { "weft.wait()", function() return weft.wait() end, "config", "futures" },
      { "weft.wait(42)", function() return weft.wait(42) end, "config", "futures" },
      { "weft.wait(a future)", function() return weft.wait(done) end, "config", "futures" },
      { "weft.wait({42})", function() return weft.wait({ 42 }) end, "config", "element 1" },
      { "weft.wait({f, 'x'})", function() return weft.wait({ done, "x" }) end,
        "config", "element 2" },
      { "weft.wait({f}, 42)", function() return weft.wait({ done }, 42) end,
        "config", "options" },
      { "weft.wait({f}, {bogus = 1})", function() return weft.wait({ done }, { bogus = 1 }) end,
        "config", "bogus" },
    }
    -- (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION are 0, 1, 2; 2^32 + 1
    -- must not wrap around to 1.)
    for _, rw in ipairs { "ALL", 3, 99, -1, 2 ^ 32 + 1, MAXINT, 1.5, NAN, INF, true, {} } do
      cases[#cases + 1] = { "weft.wait({f}, {return_when = " .. tostring(rw) .. "})",
                            function() return weft.wait({ done }, { return_when = rw }) end,
                            "config", "return_when" }
    end
    for _, s in ipairs(BAD_SECONDS) do
      cases[#cases + 1] = { "weft.wait({f}, {timeout = " .. tostring(s) .. "})",
                            function() return weft.wait({ pending }, { timeout = s }) end,
                            "config", "timeout" }
    end
    check(cases)
  end)

  it("weft.as_completed rejects a bad list and timeout", function()
    local function drain(list, t) for _ in weft.as_completed(list, t) do end end
    local cases = {
      { "weft.as_completed()", function() return drain() end, "config", "futures" },
      { "weft.as_completed(42)", function() return drain(42) end, "config", "futures" },
      { "weft.as_completed({42})", function() return drain({ 42 }) end, "config", "element 1" },
      { "weft.as_completed({f, {}})", function() return drain({ done, {} }) end,
        "config", "element 2" },
    }
    for _, s in ipairs(BAD_SECONDS) do
      cases[#cases + 1] = { "weft.as_completed({f}, " .. tostring(s) .. ")",
                            function() return drain({ pending }, s) end, "config", "timeout" }
    end
    check(cases)
  end)

  it("weft.gather raises the error of a future that did not succeed", function()
    check {
      { "weft.gather(a failed future)", function() return weft.gather(failed) end,
        "task", "upstream broke" },
      { "weft.gather{a = {b = a failed future}}",
        function() return weft.gather { a = { b = failed } } end, "task", "upstream broke" },
      { "weft.gather(a cancelled future)", function() return weft.gather(cancelled) end,
        "cancelled", "cancel" },
    }
  end)
end)

describe("tasks and flows", function()
  it("weft.task rejects a bad function, name, timeout, retries, retry_delay", function()
    local cases = {
      { "weft.task()", function() return weft.task() end, "config", "function" },
      { "weft.task(42)", function() return weft.task(42) end, "config", "options" },
      { "weft.task('f')", function() return weft.task("f") end, "config", "options" },
      { "weft.task{}", function() return weft.task {} end, "config", "function" },
      { "weft.task{42}", function() return weft.task { 42 } end, "config", "function" },
      { "weft.task{fn = 'print'}", function() return weft.task { fn = "print" } end,
        "config", "function" },
      { "weft.task{fn, bogus = 1}", function() return weft.task { noop, bogus = 1 } end,
        "config", "bogus" },
    }
    local function task_with(opts) opts[1] = noop return weft.task(opts) end
    option_cases(cases, "weft.task", task_with, "name", { 42, {}, true, noop })
    option_cases(cases, "weft.task", task_with, "timeout", BAD_SECONDS)
    option_cases(cases, "weft.task", task_with, "retries", { -1, 1.5, NAN, INF, "2", true, {} })
    -- (a table is the per-attempt list form of retry_delay)
    option_cases(cases, "weft.task", task_with, "retry_delay", { -1, -INF, NAN, "1", true, noop })
    option_cases(cases, "weft.task", task_with, "retry_delay", { { 1, -1 }, { NAN }, { "1" } },
                 "retry_delay")
    check(cases)
  end)

  it("weft.flow rejects a bad function and name", function()
    local cases = {
      { "weft.flow()", function() return weft.flow() end, "config", "function" },
      { "weft.flow(42)", function() return weft.flow(42) end, "config", "options" },
      { "weft.flow{}", function() return weft.flow {} end, "config", "function" },
      { "weft.flow{fn, timeout = 1}", function() return weft.flow { noop, timeout = 1 } end,
        "config", "timeout" },
    }
    local function flow_with(opts) opts[1] = noop return weft.flow(opts) end
    option_cases(cases, "weft.flow", flow_with, "name", { 42, {}, true })
    check(cases)
  end)

  it("flow:run rejects a bad executor and a call with a dot", function()
    local flow = weft.flow(function() return 1 end)
    local cases = {
      { "flow.run() (a dot for a colon)", function() return flow.run() end, "config", "colon" },
      { "flow.run(42)", function() return flow.run(42) end, "config", "colon" },
    }
    for _, e in ipairs { { 42, "executor" }, { true, "executor" }, { noop, "executor" },
                         { "bogus", "bogus" }, { "threads:0", "workers" },
                         { "threads:-3", "threads:-3" } } do
      cases[#cases + 1] = { "flow:run{executor = " .. tostring(e[1]) .. "}",
                            function() return flow:run { executor = e[1] } end, "config", e[2] }
    end
    check(cases)
  end)

  it("task:map rejects bad arguments, and a call outside a flow", function()
    local t = weft.task { function(x) return x end, name = "id" }
    local function in_flow(...)
      local args = table.pack(...)
      local run = weft.flow(function() return t:map(table.unpack(args, 1, args.n)) end)
                      :run { executor = ex }
      if run.state == "failed" then error(run.error, 0) end
      return run
    end
    check {
      { "task:map outside a flow", function() return t:map({ 1, 2 }) end, "config", "flow" },
      { "task:map(42)", function() return in_flow(42) end, "config", "argument 1" },
      { "task:map('abc')", function() return in_flow("abc") end, "config", "argument 1" },
      { "task:map({1}, 42)", function() return in_flow({ 1 }, 42) end, "config", "argument 2" },
      { "task:map()", function() return in_flow() end, "config", "no list" },
      { "task:map(weft.unmapped(1))", function() return in_flow(weft.unmapped(1)) end,
        "config", "no list" },
      { "task:map({1, 2}, {1})", function() return in_flow({ 1, 2 }, { 1 }) end,
        "config", "lengths" },
      { "task:map(a failed future)", function() return in_flow(failed) end,
        "dependency", "argument 1" },
      { "task:map(a future of a number)", function() return in_flow(done) end,
        "config", "argument 1" },
    }
  end)

  it("weft.observe_runs rejects what is not a function", function()
    local cases = {}
    for _, v in ipairs { 42, "f", {}, true } do
      cases[#cases + 1] = { "weft.observe_runs(" .. tostring(v) .. ")",
                            function() return weft.observe_runs(v) end, "config", "function" }
    end
    cases[#cases + 1] = { "weft.observe_runs()", function() return weft.observe_runs() end,
                          "config", "function" }
    check(cases)
  end)
end)

describe("timeouts", function()
  for _, name in ipairs { "signal", "process", "call" } do
    it(("weft.timeout.%s rejects bad seconds and what is not callable"):format(name), function()
      local fn = weft.timeout[name]
      local cases = {}
      for _, s in ipairs(BAD_SECONDS) do
        cases[#cases + 1] = { ("weft.timeout.%s(%s, fn)"):format(name, tostring(s)),
                              function() return fn(s, noop) end, "config", "seconds" }
      end
      cases[#cases + 1] = { ("weft.timeout.%s()"):format(name), function() return fn() end,
                            "config", "seconds" }
      for _, f in ipairs { 42, "print", {}, true } do
        cases[#cases + 1] = { ("weft.timeout.%s(1, %s)"):format(name, tostring(f)),
                              function() return fn(1, f) end, "config", "fn" }
      end
      cases[#cases + 1] = { ("weft.timeout.%s(1)"):format(name), function() return fn(1) end,
                            "config", "fn" }
      check(cases)
    end)
  end

  it("weft.run_task_with_timeout rejects a bad task, args and logger", function()
    local cases = {}
    for _, t in ipairs { 42, "f", {}, true } do
      cases[#cases + 1] = { "run_task_with_timeout(" .. tostring(t) .. ")",
                            function() return weft.run_task_with_timeout(t, {}) end,
                            "config", "task" }
    end
    for _, a in ipairs { 42, "x", true, noop } do
      cases[#cases + 1] = { "run_task_with_timeout(fn, " .. tostring(a) .. ")",
                            function() return weft.run_task_with_timeout(noop, a) end,
                            "config", "args" }
    end
    for _, l in ipairs { 42, "log", true, {}, { info = noop } } do
      cases[#cases + 1] = { "run_task_with_timeout(fn, {}, " .. tostring(l) .. ")",
                            function() return weft.run_task_with_timeout(noop, {}, l) end,
                            "config", "logger" }
    end
    check(cases)
  end)

  it("weft.sleep rejects bad seconds", function()
    local cases = {}
    for _, s in ipairs(BAD_SECONDS) do
      cases[#cases + 1] = { "weft.sleep(" .. tostring(s) .. ")",
                            function() return weft.sleep(s) end, "config", "seconds" }
    end
    cases[#cases + 1] = { "weft.sleep()", function() return weft.sleep() end, "config", "seconds" }
    check(cases)
  end)

  it("a huge timeout is a wait without end, not an overflow", function()
    -- 1e300 s is past any time_t: accepted, as a deadline that never
    -- comes.  Converted as it was, it made the deadline service spin at
    -- a core while such a deadline was armed (measured: 0.3 s of CPU for
    -- the sleeps below); now they cost a few ms (os.clock counts every
    -- thread of this process, not the worker processes).
    local c0 = os.clock()
    assert.equal(1, done:result(1e300))
    assert.equal("ok", weft.timeout.signal(1e300, function() weft.sleep(0.5) return "ok" end))
    assert.equal("ok", weft.timeout.process(1e300, function()
      require("weft").sleep(0.5)
      return "ok"
    end))
    local sleepy = function() require("weft").sleep(0.5) return "ok" end
    for _, make in ipairs { weft.threads, weft.processes } do
      local slow = make { workers = 1, timeout = 1e300 }
      assert.equal("ok", slow:submit(sleepy):result())
      slow:shutdown()
    end
    assert.is_true(os.clock() - c0 < 0.15, "the waits spun: " .. (os.clock() - c0) .. " s of CPU")
  end)
end)

describe("weft.log", function()
  it("weft.log.set_level rejects an unknown level", function()
    local cases = {}
    for _, l in ipairs { "loud", "", "INFO ", 42, true, {}, big_string(1e6) } do
      cases[#cases + 1] = { "weft.log.set_level(" .. tostring(l):sub(1, 20) .. ")",
                            function() return weft.log.set_level(l) end, "config", "level" }
    end
    cases[#cases + 1] = { "weft.log.set_level()", function() return weft.log.set_level() end,
                          "config", "level" }
    check(cases)
    assert.equal("info", weft.log.level())
  end)

  it("weft.log.set_sink rejects what is not a function", function()
    local cases = {}
    for _, s in ipairs { 42, "stderr", {}, true } do
      cases[#cases + 1] = { "weft.log.set_sink(" .. tostring(s) .. ")",
                            function() return weft.log.set_sink(s) end, "config", "sink" }
    end
    check(cases)
  end)

  it("weft.log.info and friends reject a format their arguments do not fit", function()
    local cases = {}
    for _, level in ipairs { "debug", "info", "warn", "error" } do
      cases[#cases + 1] = { ("weft.log.%s('%%d', 'x')"):format(level),
                            function() return weft.log[level]("%d", "x") end, "config", "format" }
      cases[#cases + 1] = { ("weft.log.%s('%%s %%s', 1)"):format(level),
                            function() return weft.log[level]("%s %s", 1) end, "config", "format" }
    end
    check(cases)
  end)
end)

describe("weft.luv", function()
  it("weft.luv.attach and await reject what is not a loop or a future", function()
    check {
      { "weft.luv.attach(42)", function() return weft.luv.attach(42) end, "config", "luv" },
      { "weft.luv.attach('uv')", function() return weft.luv.attach("uv") end, "config", "luv" },
      { "weft.luv.await(42)", function() return weft.luv.await(42) end, "config", "future" },
      { "weft.luv.await()", function() return weft.luv.await() end, "config", "future" },
      { "weft.luv.await(f) outside a coroutine", function() return weft.luv.await(done) end,
        "invalid_state", "coroutine" },
    }
  end)
end)
