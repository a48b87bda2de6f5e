-- The C embedding API (runtime/include/weft.h) through the example host,
-- scripts/examples/host.c: a C program that embeds Lua and weft, runs a
-- flow and drives done-callbacks from its own poll() loop.
local util = require "helpers.util"

local BUILD = os.getenv("WEFT_BUILD_DIR")
-- The repository root (scripts/test runs busted from there), whatever the
-- build directory is (build/asan for `make check-asan`, or elsewhere).
local top = os.getenv("PWD") or "."

-- valgrind cannot run a program built with a sanitizer (AddressSanitizer
-- maps its shadow memory where valgrind will not let it): under
-- `make check-asan` (which sets WEFT_SANITIZER) the valgrind spec is
-- pending; the plain run of the suite runs it.
local it_valgrind = os.getenv("WEFT_SANITIZER") and function(name)
  pending(name .. " (skipped: valgrind cannot run a " .. os.getenv("WEFT_SANITIZER") .. " build)")
end or it

-- Runs a shell command; returns its exit status and its output.
local function sh(cmd)
  local out = util.tmpname()
  local ok, how, code = os.execute(cmd .. " > " .. out .. " 2>&1")
  local f = assert(io.open(out, "rb"))
  local text = f:read("a")
  f:close()
  os.remove(out)
  return ok and 0 or code, text
end

local function flow(source) return util.write_temp(source, ".lua") end

-- The environment the in-tree host needs: the Lua layer and the worker.
local function env()
  return ("LUA_PATH=%q WEFT_WORKER=%q "):format(package.path, BUILD .. "/weft/weft-worker")
end

describe("the example host (weft.h)", function()
  setup(function()
    assert.is_string(BUILD, "WEFT_BUILD_DIR is not set (run through scripts/test)")
  end)

  it("runs a flow and dispatches its callbacks from its own poll loop", function()
    local path = flow([[
      local weft = require "weft"
      local ex = weft.threads { workers = 2 }
      local px = weft.processes { workers = 1 }
      for i = 1, 4 do
        ex:submit(function(x) return x * x end, i)
          :add_done_callback(function(f) print("square " .. f:result()) end)
      end
      px:submit(function(a) return a .. " from a worker process" end, arg[1])
        :add_done_callback(function(f) print(f:result()) end)
      -- still running when the flow ends: its callback comes through the loop
      ex:submit(function() os.execute("sleep 0.2") return "slow" end)
        :add_done_callback(function(f) print(f:result()) end)
    ]])
    local code, out = sh(env() .. BUILD .. "/examples/host " .. path .. " hello")
    os.remove(path)
    assert.equal(0, code, out)
    for i = 1, 4 do assert.truthy(out:find("square " .. i * i, 1, true), out) end
    assert.truthy(out:find("hello from a worker process", 1, true), out)
    assert.truthy(out:find("slow", 1, true), out)
    -- (callbacks of tasks done before the loop began ran at once)
    local n = tonumber(out:match("host: (%d+) callbacks dispatched"))
    assert.is_true(n ~= nil and n >= 1, out)
  end)

  it("exits 1 with the traceback when the flow raises", function()
    local path = flow("error('the flow broke')")
    local code, out = sh(env() .. BUILD .. "/examples/host " .. path)
    os.remove(path)
    assert.equal(1, code, out)
    assert.truthy(out:find("the flow broke", 1, true), out)
    assert.truthy(out:find("stack traceback", 1, true), out)
  end)

  it_valgrind("closing the state while tasks run cancels them, and valgrind finds no leak", function()
    local path = flow([[
      local weft = require "weft"
      local ex = weft.threads { workers = 2 }
      local px = weft.processes { workers = 2 }
      for i = 1, 3 do
        ex:submit(function() while true do end end)
          :add_done_callback(function(f) print("thread task " .. f:state()) end)
        px:submit(function() while true do end end)
          :add_done_callback(function(f) print("process task " .. f:state()) end)
      end
    ]])
    local code, out = sh(env() .. "valgrind -q --leak-check=full "
      .. "--show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect "
      .. "--error-exitcode=9 " .. BUILD .. "/examples/host --stop-after 0.2 " .. path)
    os.remove(path)
    assert.equal(0, code, out)
    assert.truthy(out:find("host: stopping with 6 callbacks pending", 1, true), out)
    local _, threads = out:gsub("thread task cancelled", "")
    local _, procs = out:gsub("process task cancelled", "")
    assert.equal(3, threads, out)
    assert.equal(3, procs, out)
  end)

  it("builds against an installed copy with pkg-config", function()
    local prefix = util.tmpname()
    local code, out = sh(("cd %q && make -s BUILD=%q PREFIX=%q install"):format(
      top, prefix .. "/build", prefix))
    assert.equal(0, code, out)
    local host = prefix .. "/host"
    code, out = sh(("PKG_CONFIG_PATH=%q cc %q -o %q $(PKG_CONFIG_PATH=%q pkg-config "
      .. "--cflags --libs weft lua5.4)"):format(prefix .. "/lib/pkgconfig",
      top .. "/scripts/examples/host.c", host, prefix .. "/lib/pkgconfig"))
    assert.equal(0, code, out)
    local path = flow([[
      local weft = require "weft"
      local px = weft.processes { workers = 1 }
      px:submit(function() return "installed " .. weft.version end)
        :add_done_callback(function(f) print(f:result()) end)
    ]])
    -- No LUA_PATH, no WEFT_WORKER: the installed copy finds its own.
    code, out = sh(("env -u LUA_PATH -u LUA_PATH_5_4 -u WEFT_WORKER LD_LIBRARY_PATH=%q %q %q")
      :format(prefix .. "/lib", host, path))
    os.remove(path)
    sh("rm -rf " .. prefix)
    assert.equal(0, code, out)
    assert.truthy(out:find("installed 0.", 1, true), out)
  end)
end)
