-- The example flows in scripts/examples/, run the way the README says:
-- `build/weft/weft run scripts/examples/NAME.lua`, as a subprocess, from
-- the repository root. Each must exit 0 and print its (deterministic)
-- results. Also: `make demo` runs the ETL example, and every code sample
-- of the README's "Tasks and flows" and "Logging" sections runs and
-- prints what its `-->` comments say.
local util = require "helpers.util"

local BUILD = os.getenv("WEFT_BUILD_DIR")
local WEFT = BUILD and BUILD .. "/weft/weft"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

-- Runs a shell command line; returns its exit status, stdout and stderr.
local function sh(cmd)
  local out, err = util.tmpname(), util.tmpname()
  local ok, _, code = os.execute(cmd .. " > " .. out .. " 2> " .. err .. " < /dev/null")
  local stdout, stderr = read(out), read(err)
  os.remove(out)
  os.remove(err)
  return ok and 0 or code, stdout, stderr
end

-- Without the caller's level or executor: the outputs checked below are
-- those of the defaults.
local CLEAN_ENV = "env -u WEFT_LOG_LEVEL -u WEFT_EXECUTOR "

-- `weft run FILE args...`, with `env` ("NAME=value ...") added.
local function weft_run(file, args, env)
  return sh(string.format("%s%s%s run %s%s", CLEAN_ENV, env or "", WEFT, file,
                          args and " " .. args or ""))
end

-- Fails with the whole output when the run did not exit 0.
local function assert_ok(status, stdout, stderr)
  assert(status == 0, string.format("exit status %s\n--- stdout\n%s\n--- stderr\n%s",
                                    tostring(status), stdout, stderr))
end

local function has(text, pattern_or_plain, plain)
  return text:find(pattern_or_plain, 1, plain) ~= nil
end

describe("the example flows (scripts/examples)", function()
  setup(function()
    assert.is_string(BUILD, "WEFT_BUILD_DIR is not set (run through scripts/test)")
    assert.is_truthy(util.exists(WEFT), "no " .. tostring(WEFT) .. " (run make first)")
  end)

  describe("etl.lua", function()
    local status, stdout, stderr
    setup(function()
      status, stdout, stderr = weft_run("scripts/examples/etl.lua")
    end)

    it("exits 0 with the totals of the loaded rows", function()
      assert_ok(status, stdout, stderr)
      assert.is_truthy(has(stdout, "rows loaded: 24\n", true), stdout)
      assert.is_truthy(has(stdout, "  acme           684.86 EUR\n", true), stdout)
      assert.is_truthy(has(stdout, "  umbrella       499.22 EUR\n", true), stdout)
      assert.is_truthy(has(stdout, "total revenue: 2000.82 EUR\n", true), stdout)
    end)

    it("maps the transform over every order and retries the load twice", function()
      assert_ok(status, stdout, stderr)
      assert.is_truthy(has(stdout, "transform  runs 24  24 completed   attempts 24", true), stdout)
      assert.is_truthy(has(stdout, "load       runs 1   1 completed    attempts 3", true), stdout)
    end)

    it("prints the tasks' log records on stderr, with flow, task and attempt", function()
      assert_ok(status, stdout, stderr)
      -- (the weft program's format: "time LEVEL [flow/task#attempt on worker] message")
      assert.is_truthy(has(stderr, "INFO +%[etl/extract[^%]]*%] extracted 24 orders"), stderr)
      assert.is_truthy(has(stderr, "WARN +%[etl/load[^%]]*%] load attempt 1: warehouse busy"), stderr)
      assert.is_truthy(has(stderr, "WARN +%[etl/load#2[^%]]*%] load attempt 2: warehouse busy"), stderr)
      assert.is_truthy(has(stderr, "INFO +%[etl/load#3[^%]]*%] load attempt 3: wrote 24 rows"), stderr)
      -- Debug records (one per order) are below the default level.
      assert.is_falsy(has(stderr, "EUR cents", true), stderr)
    end)

    it("prints the same results on a process pool and inline, with debug records", function()
      local _, threads_out = weft_run("scripts/examples/etl.lua")
      for _, spec in ipairs { "processes:2", "inline" } do
        local st, out, err = weft_run("scripts/examples/etl.lua", nil,
                                      "WEFT_EXECUTOR=" .. spec .. " WEFT_LOG_LEVEL=debug ")
        assert_ok(st, out, err)
        assert.are.equal(threads_out, out)
        assert.is_truthy(has(err, "order 24: %d+ %u+ cents %-> %d+ EUR cents"), err)
      end
    end)
  end)

  describe("cpu.lua", function()
    it("counts the points of the Mandelbrot set on processes and reports a speed-up", function()
      local status, stdout, stderr = weft_run("scripts/examples/cpu.lua")
      assert_ok(status, stdout, stderr)
      assert.is_truthy(has(stdout, "mandelbrot 960x600, 200 iterations: 116912 points inside the set\n",
                           true), stdout)
      assert.is_truthy(has(stdout, "serial:   %d+%.%d%d s\n"), stdout)
      assert.is_truthy(has(stdout, "parallel: %d+%.%d%d s on %d+ processes %(speed%-up %d+%.%dx%)\n"),
                       stdout)
    end)

    it("runs on a thread pool when asked", function()
      local status, stdout, stderr = weft_run("scripts/examples/cpu.lua", "threads:2")
      assert_ok(status, stdout, stderr)
      assert.is_truthy(has(stdout, ": 116912 points inside the set\n", true), stdout)
      assert.is_truthy(has(stdout, " on 2 threads:2 (speed-up ", true), stdout)
    end)
  end)

  describe("timeouts.lua", function()
    local status, stdout, stderr
    setup(function()
      status, stdout, stderr = weft_run("scripts/examples/timeouts.lua")
    end)

    it("completes the flow on one thread and on one process, on the second attempt", function()
      assert_ok(status, stdout, stderr)
      for _, spec in ipairs { "threads:1", "processes:1" } do
        assert.is_truthy(has(stdout, "on " .. spec .. ": flow completed: stored payload from attempt 2\n",
                             true), stdout)
      end
      local _, retried = stdout:gsub("  fetch  completed  attempts 2\n", "")
      assert.are.equal(2, retried, stdout)
      local _, stored = stdout:gsub("  store  completed  attempts 1\n", "")
      assert.are.equal(2, stored, stdout)
      assert.is_truthy(has(stdout, "weft.timeout.call: stopped (timeout error)\n", true), stdout)
    end)

    it("logs the timed-out attempt and the retry that answered", function()
      assert_ok(status, stdout, stderr)
      local _, spun = stderr:gsub("%[timeouts/fetch[^%]]*%] attempt 1: the server does not answer", "")
      assert.are.equal(2, spun, stderr)
      local _, answered = stderr:gsub("%[timeouts/fetch#2[^%]]*%] attempt 2: answered", "")
      assert.are.equal(2, answered, stderr)
    end)
  end)

  describe("the older examples", function()
    it("squares.lua and pipeline.lua run under weft run", function()
      local status, stdout, stderr = weft_run("scripts/examples/squares.lua")
      assert_ok(status, stdout, stderr)
      assert.is_truthy(has(stdout, "primes below 1000000:  78498", true), stdout)
      status, stdout, stderr = weft_run("scripts/examples/pipeline.lua")
      assert_ok(status, stdout, stderr)
      assert.is_truthy(has(stdout, "downstream of a failed task: dependency error", true), stdout)
    end)
  end)

  it("each example opens with how to run it", function()
    for _, name in ipairs { "etl", "cpu", "timeouts" } do
      local head = read("scripts/examples/" .. name .. ".lua"):sub(1, 600)
      assert.is_truthy(head:find("^%-%-%[%["), name)
      assert.is_truthy(head:find("build/weft/weft run scripts/examples/" .. name .. ".lua", 1, true), name)
      assert.is_truthy(head:find("weft run " .. name .. ".lua", 1, true), name)
    end
  end)

  it("make demo runs the ETL example with the weft program", function()
    local status, stdout, stderr = sh("make -n demo")
    assert_ok(status, stdout, stderr)
    assert.is_truthy(has(stdout, "build/weft/weft run scripts/examples/etl.lua", true), stdout)
  end)
end)

-- === the README's samples ==================================================

-- The ```lua blocks of the README sections named, in order.
local function readme_samples(sections)
  local samples, current = {}, nil
  local in_code, code
  for line in (read("README.md") .. "\n"):gmatch("(.-)\n") do
    local heading = line:match("^## (.*)$")
    if heading and not in_code then
      current = sections[heading] and heading or nil
    elseif current and line == "```lua" then
      in_code, code = true, {}
    elseif in_code and line == "```" then
      in_code = false
      samples[#samples + 1] = { section = current, source = table.concat(code, "\n") }
    elseif in_code then
      code[#code + 1] = line
    end
  end
  return samples
end

-- The outputs a sample promises: each `--> text` comment, without a
-- trailing "(remark)", whitespace collapsed.
local function promises(source)
  local list = {}
  for text in source:gmatch("%-%->%s*([^\n]*)") do
    text = text:gsub("%s*%b()%s*$", ""):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    list[#list + 1] = text
  end
  return list
end

describe("the README's sections on tasks, flows and logging", function()
  local samples = readme_samples { ["Tasks and flows"] = true, ["Logging"] = true }

  it("have code samples", function()
    local per = {}
    for _, s in ipairs(samples) do per[s.section] = (per[s.section] or 0) + 1 end
    assert.is_true((per["Tasks and flows"] or 0) >= 2)
    assert.is_true((per["Logging"] or 0) >= 1)
  end)

  for k, sample in ipairs(samples) do
    it(("sample %d (%s) runs under lua5.4 and prints what it says"):format(k, sample.section), function()
      local path = util.tmpname() .. ".lua"
      local f = assert(io.open(path, "w"))
      f:write(sample.source, "\n")
      f:close()
      local status, stdout, stderr = sh(CLEAN_ENV .. "lua5.4 " .. path)
      os.remove(path)
      assert_ok(status, stdout, stderr)
      -- Each promise is found in stdout, in order, on lines of their own.
      local lines = {}
      for line in stdout:gmatch("[^\n]+") do
        lines[#lines + 1] = (line:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
      end
      local at = 1
      for _, want in ipairs(promises(sample.source)) do
        while at <= #lines and lines[at] ~= want do at = at + 1 end
        assert(at <= #lines, ("sample %d: no line %q (in order) in:\n%s"):format(k, want, stdout))
        at = at + 1
      end
    end)
  end
end)
