-- What crosses the task boundary, and what must not: no task can take its
-- program down (os.exit, a hook that would outlive its stop, the standard
-- streams), and weft.register carries user types across with their
-- metatables.  The property spec (copy_property_spec.lua) checks copying
-- itself on random values.
local weft = require "weft"
local util = require "helpers.util"

local expect_error = util.expect_error

after_each(util.cleanup)

describe("os.exit in a task", function()
  it("fails a thread task with kind exit, and the pool goes on", function()
    local ex = util.threads { workers = 1 }
    local err = expect_error("exit", function() ex:submit(function() os.exit(3) end):result() end)
    assert.truthy(tostring(err):find("os.exit is not allowed in a thread task", 1, true))
    assert.truthy(tostring(err):find("return or error() to end the task", 1, true))
    assert.equal(42, ex:submit(function() return 42 end):result())
    local s = ex:stats()
    assert.equal(1, s.failed)
    assert.equal(1, s.completed)
  end)

  it("cannot be swallowed by a pcall in a thread task", function()
    local ex = util.threads { workers = 1 }
    local f = ex:submit(function()
      local ok = pcall(os.exit, 0)
      return "went on after os.exit", ok
    end)
    expect_error("exit", function() f:result() end)
  end)

  it("also fails a thread task that took os.exit as an upvalue", function()
    local ex = util.threads { workers = 1 }
    local exit = os.exit
    expect_error("exit", function() ex:submit(function() exit(true) end):result() end)
  end)

  it("in a thread pool's init is an init error: its tasks fail broken", function()
    local ex = util.threads { workers = 1, init = function() os.exit(1) end }
    local err = expect_error("broken", function() ex:submit(function() return 1 end):result() end)
    assert.truthy(util.mentions(err, "os.exit is not allowed"))
  end)

  it("ends a worker process: the task fails worker_died with the status, the pool replaces it", function()
    local ex = util.track(weft.processes { workers = 1 })
    local first = ex:submit(util.self_pid):result()
    local err = expect_error("worker_died", function() ex:submit(function() os.exit(7) end):result() end)
    assert.truthy(tostring(err):find("status 7", 1, true))
    local err0 = expect_error("worker_died", function() ex:submit(function() os.exit(0) end):result() end)
    assert.truthy(tostring(err0):find("status 0", 1, true))
    local pid = ex:submit(util.self_pid):result()
    assert.is_not.equal(first, pid)
    assert.equal("ok", ex:submit(function() return "ok" end):result())
  end)

  it("under weft run: the script goes on and the report is written", function()
    local script = util.write_temp([[
      local weft = require "weft"
      local quit = weft.task { function() os.exit(3) end, name = "quit" }
      local fine = weft.task { function() return 1 end, name = "fine" }
      local run = weft.flow({ function() fine() return quit() end, name = "exits" }):run()
      print("after the flow: " .. run.state)
    ]], ".lua")
    local report = util.tmpname()
    local build = os.getenv("WEFT_BUILD_DIR") or "build"
    local p = assert(io.popen(("%s/weft/weft run --no-progress --executor threads:2 --report %s %s 2>&1; echo \"exit=$?\"")
      :format(build, util.quote(report), util.quote(script))))
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("after the flow: failed", 1, true), out)
    local text = util.read(report)
    assert.truthy(text and #text > 0, "the report is empty")
    assert.truthy(text:find('"kind":"exit"', 1, true), text)
    assert.truthy(text:find("os.exit is not allowed", 1, true), text)
  end)
end)

describe("a task's own hook", function()
  it("cannot take weft's stop off: a deadline still stops the task", function()
    local ex = util.threads { workers = 1, timeout = 0.2 }
    local f = ex:submit(function()
      while true do
        pcall(function() while true do end end)   -- the stop unwinds this...
        debug.sethook()                           -- ...and this would clear it
      end
    end)
    expect_error("timeout", function() f:result() end)
    -- the worker thread was freed, not left spinning: the next task runs
    assert.equal("next", ex:submit(function() return "next" end):result(30))
    assert.equal(1, ex:stats().workers)
  end)

  it("is the task's own until a stop comes", function()
    local ex = util.threads { workers = 1 }
    local n = ex:submit(function()
      local count = 0
      debug.sethook(function() count = count + 1 end, "", 1)
      for _ = 1, 100 do end
      debug.sethook()
      return count
    end):result()
    assert.is_true(n > 100)
  end)
end)

describe("the standard streams in a thread task", function()
  it("cannot be closed", function()
    local ex = util.threads { workers = 1 }
    local ok, msg = ex:submit(function() return io.stdout:close() end):result()
    assert.is_nil(ok)
    assert.truthy(tostring(msg):find("cannot close standard file", 1, true))
    assert.is_true(io.stdout:write("") == io.stdout)
  end)
end)

describe("weft.register", function()
  local Point = { __index = { sum = function(p) return p.x + p.y end } }
  weft.register("spec.Point", Point)
  local function init() require("weft").register("spec.Point", { __index = { sum = function(p) return 10 * (p.x + p.y) end } }) end

  it("re-attaches the receiving state's metatable, in threads and processes", function()
    local th = util.threads { workers = 1, init = init }
    local pr = util.track(weft.processes { workers = 1, init = init })
    for _, ex in ipairs { th, pr } do
      local sum, p = ex:submit(function(p) return p:sum(), p end, setmetatable({ x = 1, y = 2 }, Point)):result()
      assert.equal(30, sum)                    -- the worker's own methods
      assert.equal(Point, getmetatable(p))     -- and ours on the way back
    end
  end)

  it("keeps sharing and cycles of typed tables", function()
    local ex = util.threads { workers = 1, init = init }
    local p = setmetatable({ x = 1, y = 1 }, Point)
    p.self = p
    local a, b = ex:submit(function(x, y) return x, y end, p, { p, p }):result()
    assert.equal(a, a.self)
    assert.equal(a, b[1])
    assert.equal(b[1], b[2])
    assert.equal(Point, getmetatable(a))
  end)

  it("a name the worker does not know fails the task with kind serialization, naming it", function()
    local ex = util.threads { workers = 1 }
    local err = expect_error("serialization", function()
      ex:submit(function(t) return t end, { items = { setmetatable({ x = 1, y = 2 }, Point) } }):result()
    end)
    assert.truthy(tostring(err):find("type 'spec.Point' is not registered here", 1, true), tostring(err))
    assert.truthy(tostring(err):find(".items[1]", 1, true), tostring(err))
    assert.truthy(tostring(err):find("weft.register('spec.Point', mt)", 1, true), tostring(err))
  end)

  it("drops metatables that are not registered", function()
    local ex = util.track(weft.inline())
    local back = ex:submit(function(t) return t end, setmetatable({ 1 }, { __index = {} })):result()
    assert.same({ 1 }, back)
    assert.is_nil(getmetatable(back))
  end)

  it("a weft.Error crosses as a weft.Error", function()
    local ex = util.threads { workers = 1 }
    local err = weft.future()
    err:set_exception(weft.core.error("timeout", "too slow"))
    local e = err:exception()
    local back = ex:submit(function(x) return x end, e):result()
    assert.equal(weft.Error, getmetatable(back))
    assert.is_true(weft.is(back, "timeout"))
  end)

  it("rejects a bad name or metatable with kind config", function()
    expect_error("config", function() weft.register("", {}) end)
    expect_error("config", function() weft.register(42, {}) end)
    expect_error("config", function() weft.register("X", "not a table") end)
  end)

  it("binds one name to one metatable: registering again replaces both sides", function()
    local A, B = {}, {}
    weft.register("spec.Swap", A)
    weft.register("spec.Swap", B)
    local ex = util.track(weft.inline())
    assert.equal(B, getmetatable(ex:submit(function(t) return t end, setmetatable({}, B)):result()))
    assert.is_nil(getmetatable(ex:submit(function(t) return t end, setmetatable({}, A)):result()))
  end)
end)

describe("error values with __tostring", function()
  it("print through it, from threads and processes", function()
    local th = util.threads { workers = 1 }
    local pr = util.track(weft.processes { workers = 1 })
    for _, ex in ipairs { th, pr } do
      local err = expect_error("task", function()
        ex:submit(function()
          error(setmetatable({ code = 42 }, { __tostring = function(e) return "MyError " .. e.code end }))
        end):result()
      end)
      assert.equal("MyError 42", err.message)
      assert.truthy(tostring(err):find("MyError 42", 1, true))
      assert.equal(42, err.value.code)
    end
  end)
end)

describe("copy errors", function()
  it("name the path inside the value, in arguments and results", function()
    local ex = util.threads { workers = 1 }
    local err = expect_error("serialization", function()
      ex:submit(function() end, 1, { items = { 1, 2, { co = coroutine.create(print) } } })
    end)
    assert.truthy(tostring(err):find("argument 2 .items[3].co: coroutine", 1, true), tostring(err))
    err = expect_error("serialization", function()
      ex:submit(function() return { list = { io.stdout } } end):result()
    end)
    assert.truthy(tostring(err):find("result 1 .list[1]: userdata", 1, true), tostring(err))
  end)

  it("quote binary keys instead of printing their bytes", function()
    local ex = util.track(weft.inline())
    local err = expect_error("serialization", function()
      ex:submit(function() end, { ["a\0b\255"] = coroutine.create(print) })
    end)
    assert.truthy(tostring(err):find('["a\\0b\\255"]', 1, true), tostring(err))
  end)
end)
