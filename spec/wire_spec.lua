-- Copying values between states: what crosses to a worker and back, and
-- what is refused (in the caller, at submit time).
local weft = require "weft"
local util = require "helpers.util"

local expect_error = util.expect_error

local function echo(...) return ... end

-- n tables, each the only element of the next.
local function nest(n)
  local t = {}
  for _ = 2, n do t = { t } end
  return t
end

local function depth(t)
  local d = 0
  while t do
    d = d + 1
    t = t[1]
  end
  return d
end

-- A C function that is not part of the standard library.
local function foreign_c_function()
  local ok, lfs = pcall(require, "lfs")
  if ok and type(lfs) == "table" and type(lfs.currentdir) == "function" then
    return lfs.currentdir
  end
  for _, v in pairs(require "weft.core") do
    if type(v) == "function" and debug.getinfo(v, "S").what == "C" then return v end
  end
  error("no foreign C function available for this spec")
end

-- The counters of ex:stats() (not any extra fields an executor may add).
local function counters(ex)
  local s = ex:stats()
  return {
    workers = s.workers, busy = s.busy, queued = s.queued,
    completed = s.completed, failed = s.failed, cancelled = s.cancelled,
    timed_out = s.timed_out,
  }
end

describe("copying values", function()
  local ex
  before_each(function() ex = util.threads { workers = 1 } end)
  after_each(util.cleanup)

  describe("scalars", function()
    it("copies nil and booleans, keeping nil holes", function()
      local f = ex:submit(echo, nil, true, false, nil)
      assert.equal(4, select("#", f:result()))
      local a, b, c, d = f:result()
      assert.is_nil(a)
      assert.is_true(b)
      assert.is_false(c)
      assert.is_nil(d)
    end)

    it("copies integers with all 64 bits", function()
      local values = { 0, 1, -1, math.maxinteger, math.mininteger,
        9007199254740993, -9007199254740993, 0x7f, 0x80, 0x4000, 1 << 62 }
      local got = { ex:submit(echo, table.unpack(values)):result() }
      assert.equal(#values, #got)
      for i, v in ipairs(values) do
        assert.equal("integer", math.type(got[i]))
        assert.equal(v, got[i])
      end
    end)

    it("keeps integers and floats apart", function()
      local i, f = ex:submit(echo, 3, 3.0):result()
      assert.equal("integer", math.type(i))
      assert.equal("float", math.type(f))
    end)

    it("copies floats exactly", function()
      local values = { 0.1, -2.5, math.pi, 1e308, 5e-324, 2.0 ^ 53, -1e-300 }
      local got = { ex:submit(echo, table.unpack(values)):result() }
      for i, v in ipairs(values) do
        assert.equal("float", math.type(got[i]))
        assert.equal(v, got[i])
      end
    end)

    it("copies NaN, infinities and negative zero", function()
      local nan, inf, ninf, nzero = ex:submit(echo, 0 / 0, math.huge, -math.huge, -0.0):result()
      assert.is_true(nan ~= nan)
      assert.equal(math.huge, inf)
      assert.equal(-math.huge, ninf)
      assert.equal(0, nzero)
      assert.equal(-math.huge, 1 / nzero)
    end)

    it("produces negative zero and NaN in the worker as well", function()
      local nzero, nan = ex:submit(function() return -0.0, 0 / 0 end):result()
      assert.equal(-math.huge, 1 / nzero)
      assert.is_true(nan ~= nan)
    end)
  end)

  describe("strings", function()
    it("copies binary strings with every byte value", function()
      local bytes = {}
      for b = 0, 255 do bytes[#bytes + 1] = string.char(b) end
      local all = table.concat(bytes)
      local got, n = ex:submit(function(s) return s, #s end, all):result()
      assert.equal(256, n)
      assert.equal(all, got)
    end)

    it("copies empty strings and embedded zeros", function()
      local a, b, c = ex:submit(echo, "", "\0", "a\0b\0"):result()
      assert.equal("", a)
      assert.equal("\0", b)
      assert.equal("a\0b\0", c)
      assert.equal(4, #c)
    end)

    it("copies a 100 MB string to a worker", function()
      local big = string.rep("\0\1\2\255", 25 * 1024 * 1024)
      local f = ex:submit(function(s)
        return #s, s:sub(1, 4), s:sub(-4), s:find("[^\0\1\2\255]") == nil
      end, big)
      big = nil
      local n, head, tail, clean = f:result()
      assert.equal(100 * 1024 * 1024, n)
      assert.equal("\0\1\2\255", head)
      assert.equal("\0\1\2\255", tail)
      assert.is_true(clean)
      collectgarbage()
    end)

    it("copies a 100 MB string back from a worker", function()
      local f = ex:submit(function() return string.rep("ab\0c", 25 * 1024 * 1024) end)
      local s = f:result()
      assert.equal(100 * 1024 * 1024, #s)
      assert.equal("ab\0c", s:sub(1, 4))
      assert.equal("ab\0c", s:sub(-4))
      s = nil
      collectgarbage()
    end)
  end)

  describe("tables", function()
    it("copies nested tables with keys of every copyable type", function()
      local t = {
        1, 2, "three",
        [-1] = "negative", [2.5] = "float key", [true] = "yes", [false] = "no",
        [math.maxinteger] = "max",
        s = { a = { b = { c = "deep" } }, list = { 10, 20, 30 } },
      }
      local got = ex:submit(echo, t):result()
      assert.same(t, got)
      assert.are_not.equal(t, got)
    end)

    it("copies tables 1000 levels deep both ways", function()
      local n = ex:submit(function(t)
        local d = 0
        while t do
          d = d + 1
          t = t[1]
        end
        return d
      end, nest(1000)):result()
      assert.equal(1000, n)
      local back = ex:submit(function() return nest(1000) end):result()
      assert.equal(1000, depth(back))
    end)

    it("raises kind serialization for tables 100000 levels deep and keeps working", function()
      local before = counters(ex)
      local err = expect_error("serialization", ex.submit, ex, echo, nest(100000))
      assert.is_string(err.message)
      assert.same(before, counters(ex))
      assert.equal("alive", ex:submit(echo, "alive"):result())
    end)

    it("fails a task returning a table 100000 levels deep with kind serialization", function()
      local f = ex:submit(function() return nest(100000) end)
      expect_error("serialization", f.result, f)
      assert.equal("alive", ex:submit(echo, "alive"):result())
    end)

    it("preserves a cycle", function()
      local t = { name = "loop" }
      t.self = t
      local same, back = ex:submit(function(x) return x.self == x, x end, t):result()
      assert.is_true(same)
      assert.equal(back, back.self)
      assert.equal("loop", back.name)
    end)

    it("preserves shared references across all arguments of one submit", function()
      local shared = { v = 1 }
      local a_is_b, c_has_a, key_is_a = ex:submit(function(a, b, c)
        return a == b, c[1] == a, c.k == a
      end, shared, shared, { shared, k = shared }):result()
      assert.is_true(a_is_b)
      assert.is_true(c_has_a)
      assert.is_true(key_is_a)
    end)

    it("preserves a table used as a key", function()
      local k = {}
      local t = { [k] = "found", ref = k }
      assert.equal("found", ex:submit(function(x) return x[x.ref] end, t):result())
    end)

    it("preserves shared references in the results", function()
      local a, b = ex:submit(function()
        local s = { "shared" }
        return s, { inner = s }
      end):result()
      assert.equal(a, b.inner)
    end)

    it("copies, so the worker's changes do not reach the caller", function()
      local t = { n = 1 }
      local back = ex:submit(function(x) x.n = x.n + 1; return x end, t):result()
      assert.equal(1, t.n)
      assert.equal(2, back.n)
    end)

    it("does not copy metatables", function()
      local t = setmetatable({ x = 1 }, { __index = function() return "from meta" end })
      local has_mt, x, y = ex:submit(function(v)
        return getmetatable(v) ~= nil, v.x, v.y
      end, t):result()
      assert.is_false(has_mt)
      assert.equal(1, x)
      assert.is_nil(y)
    end)

    it("does not look inside metatables", function()
      local t = setmetatable({ x = 1 }, { handle = io.stdout })
      assert.equal(1, ex:submit(function(v) return v.x end, t):result())
    end)
  end)

  describe("functions", function()
    it("copies a Lua function with its upvalues", function()
      local k = 10
      local function add(x) return x + k end
      assert.equal(15, ex:submit(function(f, x) return f(x) end, add, 5):result())
      assert.equal(11, ex:submit(function() return add(1) end):result())
    end)

    it("copies a recursive local function", function()
      local function fact(n)
        if n <= 1 then return 1 end
        return n * fact(n - 1)
      end
      assert.equal(3628800, ex:submit(fact, 10):result())
    end)

    it("keeps one upvalue shared by two closures", function()
      local function make_counter()
        local n = 0
        return function() n = n + 1 end, function() return n end
      end
      local inc, get = make_counter()
      local got = ex:submit(function(i, g)
        i()
        i()
        return g()
      end, inc, get):result()
      assert.equal(2, got)
      assert.equal(0, get())
      local via_upvalues = ex:submit(function() inc(); return get() end):result()
      assert.equal(1, via_upvalues)
    end)

    it("shares a table between an upvalue and an argument", function()
      local cfg = { n = 3 }
      local function get_cfg() return cfg end
      local same = ex:submit(function(f, c) return f() == c end, get_cfg, cfg):result()
      assert.is_true(same)
    end)

    it("gives a function whose _ENV was a sandbox the worker's globals", function()
      local chunk = load("return SPEC_MARKER, type(print)", "=sandboxed", "t",
        { SPEC_MARKER = "sandbox" })
      local marker, print_type = ex:submit(chunk):result()
      assert.is_nil(marker)
      assert.equal("function", print_type)
    end)

    it("does not copy the table held by _ENV", function()
      local chunk = load("return type(io)", "=sandboxed", "t", { handle = io.stdout })
      assert.equal("table", ex:submit(chunk):result())
    end)

    it("resolves _ENV to globals set by init", function()
      local pool = util.threads { workers = 1, init = function() SPEC_MARKER = "worker" end }
      local chunk = load("return SPEC_MARKER", "=sandboxed", "t", { SPEC_MARKER = "sandbox" })
      assert.equal("worker", pool:submit(chunk):result())
    end)

    it("copies standard library C functions", function()
      local fmt, floor, concat = ex:submit(echo, string.format, math.floor, table.concat):result()
      assert.equal(string.format, fmt)
      assert.equal(math.floor, floor)
      assert.equal(table.concat, concat)
      local got = { ex:submit(function(f, fl, c)
        return f("%d-%s", 5, "x"), fl(2.7), c({ "a", "b" }, ",")
      end, string.format, math.floor, table.concat):result() }
      assert.same({ "5-x", 2, "a,b" }, got)
    end)

    it("copies standard library C functions held as upvalues or in tables", function()
      local fmt = string.format
      local lib = { floor = math.floor }
      local got = { ex:submit(function() return fmt("%03d", 7), lib.floor(-0.5) end):result() }
      assert.same({ "007", -1 }, got)
    end)
  end)

  describe("values that cannot be copied", function()
    it("raises kind serialization in the caller naming the path and type", function()
      local err = expect_error("serialization", ex.submit, ex, echo,
        "fine", { config = { handle = io.stdout } })
      local msg = util.text(err)
      assert.truthy(msg:find("argument", 1, true), msg)
      assert.truthy(msg:find(".config.handle", 1, true), msg)
      assert.truthy(msg:find("userdata", 1, true), msg)
    end)

    it("queues nothing and leaves the pool working", function()
      local before = counters(ex)
      expect_error("serialization", ex.submit, ex, echo, { handle = io.stdout })
      assert.same(before, counters(ex))
      assert.equal("still works", ex:submit(echo, "still works"):result())
      ex:shutdown { wait = true }
      local after = counters(ex)
      assert.equal(1, after.completed)
      assert.equal(0, after.failed)
    end)

    it("refuses a userdata argument", function()
      local err = expect_error("serialization", ex.submit, ex, echo, io.stdout)
      assert.truthy(util.mentions(err, "userdata"), util.text(err))
    end)

    it("refuses a coroutine", function()
      local co = coroutine.create(function() end)
      local err = expect_error("serialization", ex.submit, ex, echo, 1, { co = co })
      assert.truthy(util.mentions(err, ".co"), util.text(err))
      assert.truthy(util.mentions(err, "thread") or util.mentions(err, "coroutine"), util.text(err))
    end)

    it("refuses a C function from outside the standard library", function()
      local err = expect_error("serialization", ex.submit, ex, echo, { fn = foreign_c_function() })
      assert.truthy(util.mentions(err, ".fn"), util.text(err))
      assert.truthy(util.mentions(err, "function"), util.text(err))
    end)

    it("refuses a C function from outside the standard library as the task", function()
      expect_error("serialization", ex.submit, ex, foreign_c_function())
    end)

    it("refuses a userdata upvalue", function()
      local handle = io.stdout
      local err = expect_error("serialization", ex.submit, ex, function() return handle end)
      assert.truthy(util.mentions(err, "userdata"), util.text(err))
    end)

    it("refuses them on the inline executor too", function()
      local inline = util.track(weft.inline())
      local err = expect_error("serialization", inline.submit, inline, echo,
        "fine", { config = { handle = io.stdout } })
      assert.truthy(util.mentions(err, ".config.handle"), util.text(err))
      expect_error("serialization", inline.submit, inline, echo, nest(100000))
    end)
  end)

  describe("globals", function()
    it("does not let a task see the submitting script's globals", function()
      SPEC_CALLER_GLOBAL = "caller"
      finally(function() SPEC_CALLER_GLOBAL = nil end)
      assert.is_nil(ex:submit(function() return SPEC_CALLER_GLOBAL end):result())
    end)

    it("explains a call to a nil global and points to init", function()
      spec_caller_function = function() return 1 end
      finally(function() spec_caller_function = nil end)
      local f = ex:submit(function() return spec_caller_function() end)
      local err = expect_error("task", f.result, f)
      assert.is_string(err.message)
      assert.truthy(err.message:find("spec_caller_function", 1, true), err.message)
      assert.truthy(err.message:find("global", 1, true), err.message)
      assert.truthy(err.message:find("init", 1, true), err.message)
    end)

    it("explains indexing a nil global and points to init", function()
      local f = ex:submit(function() return spec_json.encode(1) end)
      local err = expect_error("task", f.result, f)
      assert.truthy(err.message:find("spec_json", 1, true), err.message)
      assert.truthy(err.message:find("init", 1, true), err.message)
    end)
  end)
end)

describe("decoding untrusted bytes", function()
  local core = require "weft.core"

  -- A fixed xorshift generator: the same corruptions on every run.
  local function rng(seed)
    local x = seed
    return function(n)
      x = x ~ (x << 13); x = x ~ (x >> 7); x = x ~ (x << 17)
      return (x & 0x7fffffff) % n + 1
    end
  end

  local function sample()
    local up = 5
    local t = { 1, 2.5, "x", true, nil, { a = { b = { c = "deep" } } },
                [-1] = 0 / 0, [math.maxinteger] = -0.0 }
    t.self, t.alias = t, t[6]
    return core._wire_encode(t, "str", 42, string.format,
                             function(x) return x + up end)
  end

  it("round-trips a self-contained message", function()
    local t, s, n, fmt, fn = core._wire_decode(sample())
    assert.equal("str", s)
    assert.equal(42, n)
    assert.equal(string.format, fmt)
    assert.equal(7, fn(2))
    assert.equal(t, t.self)
    assert.equal(t[6], t.alias)
  end)

  it("rejects or decodes every corruption of a message, never crashes", function()
    local msg, rand = sample(), rng(20261122)
    local rejected, decoded = 0, 0
    for _ = 1, 5000 do
      local bytes = { msg:byte(1, -1) }
      for _ = 1, rand(4) do
        local op = rand(3)
        if op == 1 then
          bytes[rand(#bytes)] = rand(256) - 1
        elseif op == 2 and #bytes > 3 then
          for k = #bytes, 2 + rand(#bytes - 2), -1 do bytes[k] = nil end
        else
          local k = rand(#bytes)
          bytes[k] = bytes[k] ~ (1 << (rand(8) - 1))
        end
      end
      local ok, err = pcall(core._wire_decode, string.char(table.unpack(bytes)))
      if ok then
        decoded = decoded + 1
      else
        assert.is_true(weft.is(err, "serialization"), tostring(err))
        rejected = rejected + 1
      end
    end
    assert.is_true(rejected > 0)
    assert.equal(5000, rejected + decoded)
  end)

  it("refuses function bytecode whose header disagrees with its prototype", function()
    local msg = core._wire_encode(function() return 1 end)
    -- the closure's upvalue count byte follows the 31-byte Lua header inside
    -- the bytecode; find the bytecode by its signature and bump that byte
    local at = assert(msg:find("\27Lua", 1, true))
    local k = at + 31
    local bad = msg:sub(1, k - 1) .. string.char((msg:byte(k) + 3) % 256) .. msg:sub(k + 1)
    local ok, err = pcall(core._wire_decode, bad)
    assert.is_false(ok)
    assert.is_true(weft.is(err, "serialization"))
    assert.matches("bytecode", err.message)
  end)

  it("refuses in-process function pointers from outside", function()
    -- tag FUNC (7), no upvalues, proto kind 0 (a pointer) + 8 bytes
    local bad = "\1\0\1\7\0\0" .. string.rep("\65", 8)
    local ok, err = pcall(core._wire_decode, bad)
    assert.is_false(ok)
    assert.is_true(weft.is(err, "serialization"))
  end)
end)

describe("the prototype cache", function()
  it("works when closures are keyed by their bytes (WEFT_NO_PROTO_PEEK=1)", function()
    local out = util.run_lua([[
      local weft = require "weft"
      local ex <close> = weft.threads { workers = 2 }
      local fs = {}
      for i = 1, 200 do
        local x = i
        fs[i] = ex:submit(function(y) return x + y end, 1000)
      end
      local sum = 0
      for i = 1, 200 do sum = sum + fs[i]:result() end
      local n = 0
      local function inc() n = n + 1 return n end
      local function get() return n end
      local shared = ex:submit(function(i, g) i(); i(); return g() end, inc, get):result()
      print("SUM", sum, "SHARED", shared)
    ]], { WEFT_NO_PROTO_PEEK = "1" })
    assert.truthy(out:find("SUM\t220100\tSHARED\t2", 1, true), out)
  end)
end)
