-- weft.Error: fields, tostring, weft.is, and failures nobody looked at.
local weft = require "weft"
local util = require "helpers.util"

local expect_error = util.expect_error

local BOOM_LINE = debug.getinfo(1, "l").currentline + 1
local function boom() error("kaboom") end

local function first_line(s) return (s:match("^[^\n]*")) end

describe("weft.Error", function()
  local ex
  before_each(function() ex = util.threads { workers = 1 } end)
  after_each(util.cleanup)

  describe("a task error", function()
    it("is a table with the weft.Error metatable and kind task", function()
      local f = ex:submit(boom)
      local err = util.catch(f.result, f)
      assert.is_table(err)
      assert.equal(weft.Error, getmetatable(err))
      assert.equal("task", err.kind)
      assert.is_string(err.message)
    end)

    it("keeps the task's original error value in value", function()
      local f = ex:submit(boom)
      local err = expect_error("task", f.result, f)
      assert.is_string(err.value)
      assert.truthy(err.value:find("errors_spec.lua:" .. BOOM_LINE .. ": kaboom", 1, true), err.value)
    end)

    it("keeps the fields of a table error value", function()
      local f = ex:submit(function() error({ code = 42, reason = "nope", list = { 1, 2 } }) end)
      local err = expect_error("task", f.result, f)
      assert.same({ code = 42, reason = "nope", list = { 1, 2 } }, err.value)
    end)

    it("keeps a non-string error value", function()
      local f = ex:submit(function() error(42) end)
      local err = expect_error("task", f.result, f)
      assert.equal(42, err.value)
      assert.equal("integer", math.type(err.value))
    end)

    it("carries the worker's traceback naming the file and line", function()
      local f = ex:submit(boom)
      local err = expect_error("task", f.result, f)
      assert.is_string(err.traceback)
      assert.truthy(err.traceback:find("errors_spec.lua:" .. BOOM_LINE, 1, true), err.traceback)
    end)

    it("is returned by exception() without raising", function()
      local f = ex:submit(boom)
      local e = f:exception()
      assert.is_true(weft.is(e, "task"))
      assert.equal(weft.Error, getmetatable(e))
      assert.truthy(tostring(e.value):find("kaboom", 1, true))
    end)

    it("is not raised when the task caught its own error", function()
      local f = ex:submit(function()
        local ok, e = pcall(error, "inner", 0)
        return ok, e
      end)
      local ok, e = f:result()
      assert.is_false(ok)
      assert.equal("inner", e)
    end)
  end)

  describe("tostring", function()
    it("starts with a line naming the kind and the message", function()
      local f = ex:submit(boom)
      local s = tostring(util.catch(f.result, f))
      local line = first_line(s)
      assert.truthy(line:find("task", 1, true), s)
      assert.truthy(line:find("kaboom", 1, true), s)
    end)

    it("includes the worker traceback naming the file and line", function()
      local f = ex:submit(boom)
      local s = tostring(util.catch(f.result, f))
      local rest = s:sub(#first_line(s) + 1)
      assert.truthy(rest:find("errors_spec.lua:" .. BOOM_LINE, 1, true), s)
    end)

    it("names the kind of runtime errors", function()
      local f = weft.future()
      local err = util.catch(f.result, f, 0.01)
      assert.truthy(first_line(tostring(err)):find("timeout", 1, true), tostring(err))
    end)

    it("is what the standalone interpreter prints for an uncaught error", function()
      local out, ok = util.run_lua [[
        local weft = require "weft"
        local ex = weft.threads { workers = 1 }
        local f = ex:submit(function() error("uncaught-8231") end)
        local _, err = pcall(f.result, f)
        ex:shutdown()
        error(err)
      ]]
      assert.is_falsy(ok)
      assert.truthy(out:find("uncaught-8231", 1, true), out)
      assert.truthy(out:find("task", 1, true), out)
      assert.falsy(out:find("(error object is a table value)", 1, true), out)
    end)
  end)

  describe("weft.is", function()
    it("tests the kind of a weft error", function()
      local f = ex:submit(boom)
      local err = util.catch(f.result, f)
      assert.is_true(weft.is(err, "task"))
      assert.is_false(weft.is(err, "timeout"))
      assert.is_false(weft.is(err, "cancelled"))
    end)

    it("returns false for anything that is not a weft.Error", function()
      assert.is_false(weft.is("task", "task"))
      assert.is_false(weft.is({ kind = "task", message = "fake" }, "task"))
      assert.is_false(weft.is(nil, "task"))
      assert.is_false(weft.is(42, "task"))
      assert.is_false(weft.is(setmetatable({ kind = "task" }, {}), "task"))
    end)
  end)

  describe("errors the runtime raises", function()
    local function check(kind, err)
      assert.equal(weft.Error, getmetatable(err))
      assert.equal(kind, err.kind)
      assert.is_string(err.message)
      assert.truthy(first_line(tostring(err)):find(kind, 1, true), tostring(err))
    end

    it("are weft.Error for timeout", function()
      local f = weft.future()
      check("timeout", util.catch(f.result, f, 0.01))
    end)

    it("are weft.Error for cancelled", function()
      local f = weft.future()
      f:cancel()
      check("cancelled", util.catch(f.result, f))
    end)

    it("are weft.Error for shutdown", function()
      ex:shutdown()
      check("shutdown", util.catch(ex.submit, ex, boom))
    end)

    it("are weft.Error for invalid_state", function()
      local f = weft.future()
      f:set_result(1)
      check("invalid_state", util.catch(f.set_result, f, 2))
    end)

    it("are weft.Error for serialization", function()
      check("serialization", util.catch(ex.submit, ex, boom, io.stdout))
    end)

    it("are weft.Error for config", function()
      check("config", util.catch(weft.threads, { workers = 0 }))
    end)

    it("are weft.Error for dependency", function()
      local up = weft.future()
      up:set_exception("upstream")
      local f = ex:submit(function(x) return x end, up)
      check("dependency", util.catch(f.result, f))
    end)

    it("are weft.Error for broken", function()
      local pool = util.threads { workers = 1, init = function() error("bad init") end }
      local f = pool:submit(function() end)
      check("broken", util.catch(f.result, f))
    end)
  end)

  describe("a failed future nobody looked at", function()
    it("is reported on stderr", function()
      local out = util.run_lua [[
        local weft = require "weft"
        local ex = weft.threads { workers = 1 }
        local f = ex:submit(function() error("unseen-failure-5150") end)
        ex:shutdown { wait = true }
        f = nil
        collectgarbage()
        collectgarbage()
        io.stdout:write("END\n")
      ]]
      assert.truthy(out:find("unseen-failure-5150", 1, true), out)
    end)

    it("is reported when its executor shuts down, while still referenced", function()
      local out = util.run_lua [[
        local weft = require "weft"
        local ex = weft.threads { workers = 1 }
        local f = ex:submit(function() error("at-shutdown-7171") end)
        ex:shutdown { wait = true }
        io.stderr:write("AFTER-SHUTDOWN\n")
        keep = f
      ]]
      local at = out:find("at-shutdown-7171", 1, true)
      assert.truthy(at, out)
      assert.is_true(at < out:find("AFTER-SHUTDOWN", 1, true), out)
    end)

    it("is reported when collected, with its executor still running", function()
      local out = util.run_lua [[
        local weft = require "weft"
        local ex = weft.threads { workers = 1 }
        local f = ex:submit(function() error("on-collect-8181") end)
        weft.wait({ f })
        f = nil
        collectgarbage()
        collectgarbage()
        io.stderr:write("COLLECTED\n")
        ex:shutdown()
      ]]
      local at = out:find("on-collect-8181", 1, true)
      assert.truthy(at, out)
      assert.is_true(at < out:find("COLLECTED", 1, true), out)
    end)

    it("is reported once, not again when collected after the shutdown", function()
      local out = util.run_lua [[
        local weft = require "weft"
        local ex = weft.threads { workers = 1 }
        local f = ex:submit(function() error("once-9191") end)
        ex:shutdown { wait = true }
        f = nil
        collectgarbage()
        collectgarbage()
      ]]
      local _, count = out:gsub("once%-9191", "")
      assert.equal(1, count, out)
    end)

    it("is not reported once its error was retrieved", function()
      local out = util.run_lua [[
        local weft = require "weft"
        local ex = weft.threads { workers = 1 }
        local f = ex:submit(function() error("seen-failure-6160") end)
        local e = f:exception()
        assert(weft.is(e, "task"))
        ex:shutdown { wait = true }
        f, e = nil, nil
        collectgarbage()
        collectgarbage()
        io.stdout:write("END\n")
      ]]
      assert.truthy(out:find("END", 1, true), out)
      assert.falsy(out:find("seen-failure-6160", 1, true), out)
    end)
  end)
end)
