-- The copying property: whatever crosses the task boundary arrives intact.
--
-- Thousands of seeded random values (helpers/values.lua says what they
-- hold) go through every executor, in both directions:
--   * as arguments and back as results (an identity task), compared with
--     the original: deep equality, every key, sharing and cycles, shared
--     upvalue cells, registered metatables kept and others dropped, futures
--     replaced by their values;
--   * built in the worker by the same generator from the same seed, so only
--     the result crosses, compared with the value built here.
-- A chain of tables nested past the wire's limit (1,000) must fail with
-- kind serialization, never crash; one within the limit must arrive.
--
-- On a failure the message gives the seed, the case, the executor, where
-- the copy differs, and the smallest value the shrinker found that still
-- fails.  Rerun one seed with WEFT_COPY_SEED=S; WEFT_COPY_CASES=N sets the
-- cases per executor and direction (default 500: 4,000 values a run);
-- scripts/check/copy runs the long sweep.
local weft = require "weft"
local V = require "helpers.values"
local R = require "helpers.redis"

local CASES = tonumber(os.getenv("WEFT_COPY_CASES") or "") or 500
local SEED = tonumber(os.getenv("WEFT_COPY_SEED") or "") or (os.time() * 1000 + math.random(0, 999))
local WINDOW = 32

V.register_types()

local function finished(v)
  local f = weft.future()
  f:set_result(v)
  return f
end

local compare = {
  future_value = function(f) return (f:result()) end,
  registered = V.registered,
}

local function identity(...) return ... end

-- Runs in the worker: builds the value of `seed` there.
local function build_there(seed, opts)
  local values = require "helpers.values"
  values.register_types()
  opts.types = values.type_list()
  return (values.generate(seed, opts))
end

local function case_seed(i) return SEED * 1000003 + i end

-- The options of case i: big strings (MiB) in one case in 50.
local function case_opts(i, with_futures, with_types)
  return {
    big = i % 50 == 7,
    futures = with_futures and finished or nil,
    types = with_types and V.type_list() or nil,
  }
end

local function report(ex_name, direction, i, why, value, shrunk)
  return string.format(
    "copy property failed: seed %d, case %d (WEFT_COPY_SEED=%d), executor %s, %s\n" ..
    "  %s\n  the value: %s\n  smallest failing value: %s",
    SEED, i, SEED, ex_name, direction, why, V.show(value, 1500),
    shrunk and V.show(shrunk, 1500) or "(not shrunk)")
end

-- One value through ex and back: true, or false and why.
local function echo_once(ex, value)
  local ok, f = pcall(ex.submit, ex, identity, value)
  if not ok then return false, "submit raised: " .. tostring(f) end
  local got = table.pack(pcall(f.result, f, 60))
  if not got[1] then return false, "the task failed: " .. tostring(got[2]) end
  if got.n ~= 2 then return false, "expected 1 result, got " .. (got.n - 1) end
  return V.same(value, got[2], compare)
end

local function check_depth(ex, value, info, outcome_of)
  local ok, err = outcome_of()
  if info.depth <= 1000 then
    assert(ok, string.format("seed %d: a chain %d deep must cross: %s", SEED, info.depth, tostring(err)))
  else
    assert(not ok and weft.is(err, "serialization") and tostring(err):find("nested deeper", 1, true),
           string.format("seed %d: a chain %d deep must fail with kind serialization, got %s",
                         SEED, info.depth, tostring(err)))
  end
end

-- Arguments out, results back.
local function run_echo(ex, name, opts)
  local pending = {}
  local function settle(entry)
    local i, value, f = entry.i, entry.value, entry.f
    local got = table.pack(pcall(f.result, f, 120))
    local ok, why
    if not got[1] then
      ok, why = false, "the task failed: " .. tostring(got[2])
    elseif got.n ~= 2 then
      ok, why = false, "expected 1 result, got " .. (got.n - 1)
    else
      ok, why = V.same(value, got[2], compare)
    end
    if not ok then
      local shrunk = V.shrink(value, function(v)
        local same = echo_once(ex, v)
        return not same
      end)
      error(report(name, "arguments and results", i, why, value, shrunk), 0)
    end
  end
  for i = 1, CASES do
    local value, info = V.generate(case_seed(i), case_opts(i, opts.futures, opts.types))
    if info.depth then
      check_depth(ex, value, info, function()
        local ok, f = pcall(ex.submit, ex, identity, value)
        if not ok then return false, f end
        local r = table.pack(pcall(f.result, f, 120))
        if not r[1] then return false, r[2] end
        return V.same(value, r[2], compare)
      end)
    else
      local ok, f = pcall(ex.submit, ex, identity, value)
      if not ok then
        error(report(name, "arguments", i, "submit raised: " .. tostring(f), value,
                     V.shrink(value, function(v) return not pcall(ex.submit, ex, identity, v) end)), 0)
      end
      pending[#pending + 1] = { i = i, value = value, f = f }
      if #pending >= WINDOW then
        for _, entry in ipairs(pending) do settle(entry) end
        pending = {}
      end
    end
  end
  for _, entry in ipairs(pending) do settle(entry) end
end

-- Built in the worker, only the result crosses.
local function run_built_there(ex, name)
  local pending = {}
  local function settle(entry)
    local i, f = entry.i, entry.f
    local opts = case_opts(i, false, true)
    local expected, info = V.generate(case_seed(i), opts)
    local got = table.pack(pcall(f.result, f, 120))
    if info.depth then
      check_depth(ex, expected, info, function()
        if not got[1] then return false, got[2] end
        return V.same(expected, got[2], compare)
      end)
      return
    end
    local ok, why
    if not got[1] then
      ok, why = false, "the task failed: " .. tostring(got[2])
    else
      ok, why = V.same(expected, got[2], compare)
    end
    if not ok then
      local shrunk = V.shrink(expected, function(v) return not echo_once(ex, v) end)
      error(report(name, "results (built in the worker)", i, why, expected, shrunk), 0)
    end
  end
  for i = 1, CASES do
    local opts = case_opts(i, false, false)
    pending[#pending + 1] = { i = i, f = ex:submit(build_there, case_seed(i), { big = opts.big }) }
    if #pending >= WINDOW then
      for _, entry in ipairs(pending) do settle(entry) end
      pending = {}
    end
  end
  for _, entry in ipairs(pending) do settle(entry) end
end

local function register_init() require("helpers.values").register_types() end

describe("copying random values #property", function()
  print(string.format("copy property: seed %d, %d cases per executor and direction", SEED, CASES))

  it("keeps every key of tables whatever their layout (known cases)", function()
    local f = finished(7)
    local ex <close> = weft.inline()
    local back = ex:submit(identity, { [1] = f, label = "kept" }):result()
    assert.same({ 7, label = "kept" }, back)
    local t = { [1] = "one", x = "x" }
    t[math.maxinteger] = "max"
    local copy = ex:submit(identity, t):result()
    assert.same(t, copy)
    local pow = { [math.maxinteger] = "m" }
    for i = 0, 62 do pow[1 << i] = i end       -- a border of math.maxinteger
    assert.same(pow, ex:submit(identity, pow):result())
  end)

  describe("inline", function()
    local ex
    setup(function() ex = weft.inline() end)
    teardown(function() ex:shutdown() end)
    it("arguments and results arrive intact", function() run_echo(ex, "inline", { futures = true, types = true }) end)
    it("results built in the task arrive intact", function() run_built_there(ex, "inline") end)
  end)

  describe("threads", function()
    local ex
    setup(function() ex = weft.threads { workers = 2, init = register_init } end)
    teardown(function() ex:shutdown() end)
    it("arguments and results arrive intact", function() run_echo(ex, "threads", { futures = true, types = true }) end)
    it("results built in the task arrive intact", function() run_built_there(ex, "threads") end)
  end)

  describe("processes", function()
    local ex
    setup(function() ex = weft.processes { workers = 2, init = register_init } end)
    teardown(function() ex:shutdown() end)
    it("arguments and results arrive intact", function() run_echo(ex, "processes", { futures = true, types = true }) end)
    it("results built in the task arrive intact", function() run_built_there(ex, "processes") end)
  end)

  describe("redis", function()
    local ex, server
    setup(function()
      server = R.start {}
      R.worker(server.url, { queue = "copy", workers = 2, secret = "copy-secret",
                             args = { "--require", "helpers.values_types" } })
      ex = weft.redis { url = server.url, queue = "copy", secret = "copy-secret" }
    end)
    teardown(function()
      ex:shutdown()
      R.cleanup()
    end)
    it("arguments and results arrive intact", function() run_echo(ex, "redis", { futures = true, types = true }) end)
    it("results built in the task arrive intact", function() run_built_there(ex, "redis") end)
  end)
end)
