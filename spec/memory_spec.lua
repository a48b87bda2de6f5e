-- Out of memory: a task whose Lua state cannot allocate fails with a
-- weft.Error of kind "memory" that says memory ran out and where, in every
-- executor, and the executor serves on.
--
-- Each case runs in a child lua5.4 under `ulimit -v` (RLIMIT_AS, inherited
-- by the worker processes it starts): a real limit, so an allocation past
-- it fails at once, whatever else the machine does.  The tasks ask for
-- 1 GB under a 600 MB limit (the child and its workers need under 100 MB
-- of address space), or build 300 MB of results whose copy does not fit.
-- Sanitizer builds reserve terabytes of address space up front, so under
-- `make check-asan` (which sets WEFT_SANITIZER) these are pending.  (ASan's
-- own max_allocation_size_mb would do as a limit, but every refused
-- allocation leaves a warning in its log, which the check counts.)
local util = require "helpers.util"

local LIMIT_KB = 600 * 1024

local it_limited = os.getenv("WEFT_SANITIZER") and function(name)
  pending(name .. " (skipped: a " .. os.getenv("WEFT_SANITIZER") ..
          " build cannot run under ulimit -v)")
end or it

-- Runs `body` in a child lua5.4 under the memory limit (limit_kb, default
-- LIMIT_KB); `body` prints lines with say(...).  Returns the lines.
local function under_limit(body, limit_kb)
  local script = util.tmpname() .. ".lua"
  local outfile = util.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("package.path = %q\npackage.cpath = %q\n"):format(package.path, package.cpath))
  f:write([[
    local weft = require "weft"
    local function say(...)
      local t = table.pack(...)
      for i = 1, t.n do t[i] = tostring(t[i]) end
      io.write(table.concat(t, "\t"), "\n")
      io.flush()
    end
    -- the outcome of fn(...): "ok <value>" or "<kind> <message>"
    local function outcome(fn, ...)
      local ok, err = pcall(fn, ...)
      if ok then return "ok", err end
      if weft.is(err, "memory") or type(err) == "table" then
        return tostring(err.kind), tostring(err.message)
      end
      return "raw", tostring(err)
    end
    local function hog() return #string.rep("x", 1 << 30) end
    local function big_result(pieces)
      local t = {}
      for i = 1, pieces or 150 do t[i] = string.rep("y", 2 << 20) .. i end
      return t
    end
  ]])
  f:write(body)
  f:close()
  local ok = os.execute(("ulimit -v %d && lua5.4 %s > %s 2>&1"):format(limit_kb or LIMIT_KB,
                                                                       script, outfile))
  local out = util.read(outfile) or ""
  assert(ok, "the child failed:\n" .. out)
  local lines = {}
  for line in out:gmatch("[^\n]+") do
    local k, v = line:match("^(.-)\t(.*)$")
    lines[#lines + 1] = { k or line, v }
  end
  return lines, out
end

local function expect_memory(line, where, out)
  assert.equal("memory", line[1], out)
  assert.truthy(line[2]:find("out of memory", 1, true), out)
  assert.truthy(line[2]:find(where, 1, true), out)
end

describe("out of memory", function()
  after_each(util.cleanup)

  for _, kind in ipairs { "threads", "processes", "inline" } do
    it_limited("in a task of weft." .. kind .. " fails it with kind memory; the executor serves on", function()
      local lines, out = under_limit(([[
        local ex = weft.%s { workers = %s }
        say(outcome(function() return ex:submit(hog):result() end))
        say(outcome(function() return ex:submit(function() return "serves on" end):result() end))
        ex:shutdown()
      ]]):format(kind, kind == "inline" and "nil" or "1"))
      assert.equal(2, #lines, out)
      expect_memory(lines[1], "while the task ran", out)
      assert.same({ "ok", "serves on" }, lines[2], out)
    end)
  end

  for _, kind in ipairs { "threads", "processes" } do
    it_limited("in one item of a weft." .. kind .. " map fails that item with kind memory", function()
      local lines, out = under_limit(([[
        local ex = weft.%s { workers = 1 }
        -- items 1 and 3 come back; item 2 raises its own error
        local got = {}
        say(outcome(function()
          for i, v in ex:map(function(x)
            if x == 2 then return #string.rep("x", 1 << 30) end
            return x * 10
          end, { 1, 2, 3 }) do got[i] = v end
        end))
        assert(got[1] == 10, "item 1 did not come back")
        say(outcome(function() return ex:submit(function() return "serves on" end):result() end))
        ex:shutdown()
      ]]):format(kind))
      assert.equal(2, #lines, out)
      expect_memory(lines[1], "while the task ran", out)
      assert.same({ "ok", "serves on" }, lines[2], out)
    end)

    it_limited("copying the results of a weft." .. kind .. " task fails it with kind memory", function()
      local lines, out = under_limit(([[
        local ex = weft.%s { workers = 1 }
        say(outcome(function() return #ex:submit(big_result):result() end))
        say(outcome(function() return ex:submit(function() return "serves on" end):result() end))
        ex:shutdown()
      ]]):format(kind))
      assert.equal(2, #lines, out)
      expect_memory(lines[1], "while the task's results were copied out", out)
      assert.same({ "ok", "serves on" }, lines[2], out)
    end)
  end

  for _, kind in ipairs { "threads", "processes" } do
    it_limited("raised again (coroutine.wrap, pcall then error) is still kind memory in weft." .. kind, function()
      local lines, out = under_limit(([[
        local ex = weft.%s { workers = 1 }
        say(outcome(function() return ex:submit(function()
          return coroutine.wrap(function() return #string.rep("x", 1 << 30) end)()
        end):result() end))
        say(outcome(function() return ex:submit(function()
          local ok, e = pcall(string.rep, "x", 1 << 30)
          error(e)
        end):result() end))
        say(outcome(function() return ex:submit(function()
          error("a message that merely ends in: not enough memory!")
        end):result() end))
        ex:shutdown()
      ]]):format(kind))
      assert.equal(3, #lines, out)
      expect_memory(lines[1], "while the task ran", out)
      expect_memory(lines[2], "while the task ran", out)
      assert.equal("task", lines[3][1], out)
    end)
  end

  for _, kind in ipairs { "threads", "processes" } do
    it_limited("copying a weft." .. kind .. " task's results into the caller fails with kind memory", function()
      -- 150 MB of results: the worker has room to make and send them
      -- (about 450 MB at most), the caller not to keep them as they came
      -- and copy them into its state as well (a 256 MB buffer, 150 MB
      -- kept, 150 MB copied).  The caller's state is fine after it.
      local lines, out = under_limit(([[
        local ex = weft.%s { workers = 1 }
        local f = ex:submit(big_result, 75)
        say(outcome(function() return #f:result() end))
        say(outcome(function() return #f:result() end))   -- (again: nothing half-cached)
        say(outcome(function() return ex:submit(function() return "serves on" end):result() end))
        ex:shutdown()
      ]]):format(kind), 560 * 1024)
      assert.equal(3, #lines, out)
      expect_memory(lines[1], "copied into this state", out)
      expect_memory(lines[2], "copied into this state", out)
      assert.same({ "ok", "serves on" }, lines[3], out)
    end)
  end

  it_limited("in weft.timeout.process fails the call with kind memory", function()
    local lines, out = under_limit([[
      say(outcome(weft.timeout.process, 60, hog))
      say(outcome(weft.timeout.process, 60, function() return "fine" end))
    ]])
    assert.equal(2, #lines, out)
    expect_memory(lines[1], "while the task ran", out)
    assert.same({ "ok", "fine" }, lines[2], out)
  end)
end)
