-- weft.redis{} and `weft worker` against a server that is there but not
-- ready to serve, or set up so that it would lose or refuse work: Redis
-- restarting from a big AOF (it answers LOADING for a while), eviction
-- policies that may drop the queue's keys, and messages larger than the
-- server takes (proto-max-bulk-len).  Real redis-server and `weft worker`
-- processes (helpers/redis.lua); each spec starts its own server.
--
-- House rules (as in redis_spec.lua): no spec waits on time for
-- correctness.  How long the server answers LOADING is in the spec's
-- hands: the AOF holds keys that load one every 50 ms (the DEBUG-only
-- config key-load-delay), and the spec sets that delay to 0 once it has
-- seen what it waits for (the server's own count of refused commands), so
-- the server leaves LOADING then and not before.
local weft = require "weft"
local util = require "helpers.util"
local R = require "helpers.redis"

local expect_error = util.expect_error

local WAIT = 60   -- seconds: the bound on any one wait for an event

local executors, futures = {}, {}

local function redis(opts)
  local ex = weft.redis(opts)
  executors[#executors + 1] = ex
  return ex
end

local function track(f)
  futures[#futures + 1] = f
  return f
end

local function cleanup()
  local first_err
  local function try(fn, ...)
    local ok, err = pcall(fn, ...)
    if not ok then first_err = first_err or err end
  end
  for _, f in ipairs(futures) do
    try(function() if not f:done() then f:cancel { force = true } end end)
  end
  for _, ex in ipairs(executors) do
    try(ex.shutdown, ex, { wait = true, cancel_futures = true })
  end
  executors, futures = {}, {}
  R.cleanup()
  if first_err ~= nil then error(first_err, 0) end
end

-- f:result(WAIT), with every worker's log added to the error when it fails.
local function result(f)
  local r = table.pack(pcall(f.result, f, WAIT))
  if not r[1] then error(util.text(r[2]) .. "\n" .. R.logs(), 2) end
  return table.unpack(r, 2, r.n)
end

-- A field of INFO `section` (a string), or nil.
local function info_field(server, section, name)
  local text = server:cmd("INFO", section)
  if type(text) ~= "string" then return nil end
  return text:match(name .. ":([^\r\n]*)")
end

-- How many calls of `command` the server refused (LOADING, among others).
local function rejected(server, command)
  local stats = info_field(server, "commandstats", "cmdstat_" .. command)
  return stats and math.tointeger(tonumber(stats:match("rejected_calls=(%d+)"))) or 0
end

-- A server whose AOF takes as long to load as the spec wants: 2000 keys
-- of 1 KB in the AOF's base file, each loaded after a 50 ms delay
-- (key-load-delay, in microseconds: 100 s in all) until the spec sets it
-- to 0.  Events are served after each key, so the server answers LOADING
-- meanwhile.
local function slow_loading_server()
  local server = R.start { aof = true, args = {
    "--enable-debug-command", "local", "--key-load-delay", "50000",
    "--loading-process-events-interval-bytes", "1024" } }
  assert.equal("OK", server:cmd("DEBUG", "POPULATE", "2000", "pad", "1024"))
  server:cmd("BGREWRITEAOF")
  R.wait_until("the AOF rewrite", WAIT, function()
    return info_field(server, "persistence", "aof_rewrite_in_progress") == "0"
       and info_field(server, "persistence", "aof_rewrite_scheduled") == "0"
  end)
  return server
end

describe("weft.redis while the server loads its AOF", function()
  local Q = "loading"

  after_each(cleanup)

  it("rides out a restart that answers LOADING: no task fails, every result is right", function()
    local server = slow_loading_server()
    R.worker(server.url, { queue = Q, workers = 2, claim_idle = 1, heartbeat = 0.2,
                           name = "load-a" })
    local ex = redis { url = server.url, queue = Q }
    local fs = {}
    for i = 1, 40 do fs[i] = track(ex:submit(function(x) return x * 3 end, i)) end
    for i = 1, 40 do assert.equal(i * 3, result(fs[i])) end
    for i = 41, 60 do
      fs[i] = track(ex:submit(function(x) os.execute("sleep 0.05") return x * 3 end, i))
    end
    server:kill()
    server:restart { loading = true }
    -- Submitted while the server loads: the executor's XADDs are refused
    -- with LOADING (the spec waits until the server has refused one).
    for i = 61, 100 do fs[i] = track(ex:submit(function(x) return x * 3 end, i)) end
    R.wait_until("an XADD refused with LOADING", WAIT, function()
      return rejected(server, "xadd") > 0
    end, function() return server:cmd("INFO", "commandstats") end)
    assert.equal("OK", server:cmd("CONFIG", "SET", "key-load-delay", "0"))
    for i = 1, 100 do assert.equal(i * 3, result(fs[i])) end
    local s = ex:stats()
    assert.equal(100, s.completed)
    assert.equal(0, s.failed)
    assert.equal(Q, s.queue)
  end)

  it("making an executor waits for a loading server within reconnect_window, then raises kind broken saying so", function()
    local server = slow_loading_server()
    server:kill()
    server:restart { loading = true }
    local err = expect_error("broken", weft.redis, { url = server.url, queue = Q,
                                                     reconnect_window = 0.5 })
    assert.truthy(util.mentions(err, "LOADING"), util.text(err))
    assert.equal("OK", server:cmd("CONFIG", "SET", "key-load-delay", "0"))
    R.worker(server.url, { queue = Q, workers = 1 })
    local ex = redis { url = server.url, queue = Q }
    assert.equal(6, result(ex:submit(function() return 6 end)))
  end)
end)

describe("weft.redis reconnect window", function()
  local Q = "window"

  after_each(cleanup)

  it("fails the tasks in flight with kind broken once the server stays away for reconnect_window, saying how long", function()
    local server = R.start {}
    local ex = redis { url = server.url, queue = Q, reconnect_window = 1 }
    -- No worker, no timeout: only the window can end this task.
    local f = track(ex:submit(function() return 1 end))
    R.wait_until("the task's entry", WAIT, function()
      return server:cmd("XLEN", "weft:" .. Q .. ":tasks") == 1
    end)
    server:kill()
    local err = expect_error("broken", f.result, f, WAIT)
    assert.truthy(util.mentions(err, "unreachable for"), util.text(err))
    assert.truthy(util.mentions(err, "reconnect_window = 1 s"), util.text(err))
    assert.truthy(util.mentions(err, server.socket), util.text(err))
    -- A task submitted while it stays away fails too (after one more try).
    local g = track(ex:submit(function() return 2 end))
    err = expect_error("broken", g.result, g, WAIT)
    assert.truthy(util.mentions(err, "unreachable for"), util.text(err))
  end)

  it("raises kind config for a reconnect_window that is not a positive number", function()
    for _, v in ipairs { 0, -1, "60", 0 / 0 } do
      local err = expect_error("config", weft.redis, { url = "unix:///nowhere", reconnect_window = v })
      assert.truthy(util.mentions(err, "reconnect_window"), util.text(err))
    end
  end)

  it("a worker gives up after --reconnect-window, exits 1, and its task runs on another worker", function()
    local server = R.start { aof = true }
    local dir = assert(require("luv").fs_mkdtemp("/tmp/weft-spec.XXXXXX"))
    local started, release = dir .. "/started", dir .. "/release"
    local a = R.worker(server.url, { queue = Q, workers = 1, name = "win-a",
                                     args = { "--reconnect-window", "1" } })
    local ex = redis { url = server.url, queue = Q }
    local f = track(ex:submit(function(s, r)
      local function exists(p) local h = io.open(p) if h then h:close() end return h ~= nil end
      io.open(s, "a"):close()
      local deadline = os.time() + 120
      while not exists(r) and os.time() < deadline do os.execute("sleep 0.02") end
      return "done"
    end, started, release))
    R.wait_until("the task to start", WAIT, function() return util.exists(started) end)
    server:kill()
    assert.equal(1, a:wait_exit(WAIT))
    local line = a:wait_line({ "unreachable for", "giving up" })
    assert.truthy(line:find("--reconnect-window 1 s", 1, true), line)
    server:restart()
    io.open(release, "a"):close()
    R.worker(server.url, { queue = Q, workers = 1, name = "win-b", claim_idle = 1,
                           heartbeat = 0.2 })
    assert.equal("done", result(f))
    assert.truthy(f:info().worker:find("win-b", 1, true), f:info().worker)
    os.execute("rm -rf " .. util.quote(dir))
  end)
end)

describe("weft.redis and an eviction policy", function()
  local Q = "evict"
  local EVICTS = { "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru" }

  -- Runs fn with weft.log records collected; returns them.
  local function with_records(fn)
    local records = {}
    weft.log.set_sink(function(r) records[#records + 1] = r end)
    local ok, err = pcall(fn)
    weft.log.set_sink(nil)
    if not ok then error(err, 0) end
    return records
  end

  local function warnings(records, text)
    for _, r in ipairs(records) do
      if r.level == "warn" and r.message:find(text, 1, true) then return r.message end
    end
  end

  after_each(cleanup)

  it("a client refuses a server that may evict keys with kind config, naming the policy and the fix", function()
    local server = R.start { args = EVICTS }
    local err = expect_error("config", weft.redis, { url = server.url, queue = Q })
    for _, text in ipairs { "allkeys-lru", "maxmemory-policy noeviction", "allow_eviction" } do
      assert.truthy(util.mentions(err, text), util.text(err))
    end
    -- Nothing was left on the server.
    assert.equal(0, server:cmd("EXISTS", "weft:" .. Q .. ":tasks"))
  end)

  it("a client runs with allow_eviction = true, with a warning", function()
    local server = R.start { args = EVICTS }
    R.worker(server.url, { queue = Q, workers = 1, args = { "--allow-eviction" } })
    local ex
    local records = with_records(function()
      ex = redis { url = server.url, queue = Q, allow_eviction = true }
    end)
    local msg = warnings(records, "allkeys-lru")
    assert.truthy(msg, util.text(records))
    assert.truthy(msg:find("noeviction", 1, true), msg)
    assert.equal(42, result(ex:submit(function() return 42 end)))
  end)

  it("a worker refuses such a server (exit status 2, naming the policy and --allow-eviction), or warns with --allow-eviction", function()
    local server = R.start { args = EVICTS }
    local w = R.worker(server.url, { queue = Q, nowait = true })
    assert.equal(2, w:wait_exit(WAIT))
    w:wait_line({ "allkeys-lru", "maxmemory-policy noeviction", "--allow-eviction" })
    assert.falsy(w:log():find(R.READY, 1, true), w:log())
    local v = R.worker(server.url, { queue = Q, args = { "--allow-eviction" } })
    assert.truthy(v:wait_line({ "warning", "allkeys-lru" }))
  end)

  it("both go on, with a warning, when an ACL denies CONFIG", function()
    -- (TCP: the URL carries the ACL user's name and password)
    local server = R.start { user = "bob", pass = "pw-f", port = true, args = EVICTS }
    server:cmd("ACL", "SETUSER", "bob", "-config")
    local url = ("redis://bob:pw-f@127.0.0.1:%d/0"):format(server.port)
    local w = R.worker(url, { queue = Q, name = "acl-w" })
    assert.truthy(w:wait_line({ "warning", "cannot read the eviction policy", "NOPERM" }))
    local ex
    local records = with_records(function() ex = redis { url = url, queue = Q } end)
    assert.truthy(warnings(records, "cannot read the eviction policy"), util.text(records))
    assert.equal(7, result(ex:submit(function() return 7 end)))
  end)
end)

describe("weft.redis and messages larger than the server takes", function()
  local Q = "big"
  local LIMIT = 1048576   -- proto-max-bulk-len: the server's smallest allowed
  local server, ex, w

  before_each(function()
    server = R.start { args = { "--proto-max-bulk-len", tostring(LIMIT) } }
    w = R.worker(server.url, { queue = Q, workers = 1, name = "big-w" })
    ex = redis { url = server.url, queue = Q }
  end)

  after_each(cleanup)

  it("an oversized argument fails at submit with kind serialization, giving the size and the limit; the executor goes on", function()
    local big = string.rep("x", 2 * LIMIT)
    local err = expect_error("serialization", ex.submit, ex, function(s) return #s end, big)
    for _, text in ipairs { "bytes", tostring(LIMIT), "proto-max-bulk-len" } do
      assert.truthy(util.mentions(err, text), util.text(err))
    end
    assert.equal(3, result(ex:submit(function(s) return #s end, "abc")))
  end)

  it("max_message under the server's limit is the limit, and says so", function()
    local small = redis { url = server.url, queue = Q, max_message = 100000 }
    local err = expect_error("serialization", small.submit, small, function(s) return #s end,
                             string.rep("x", 200000))
    assert.truthy(util.mentions(err, "100000"), util.text(err))
    assert.truthy(util.mentions(err, "max_message"), util.text(err))
    assert.equal(5, result(small:submit(function(s) return #s end, "12345")))
  end)

  it("inputs from upstream tasks that make a message too big fail that task, not the executor", function()
    local part = function() return string.rep("p", 600000) end
    local a, b = track(ex:submit(part)), track(ex:submit(part))
    assert.equal(600000, #result(a))
    local joined = track(ex:submit(function(x, y) return #x + #y end, a, b))
    local err = expect_error("serialization", joined.result, joined, WAIT)
    assert.truthy(util.mentions(err, "bytes"), util.text(err))
    assert.equal(2, result(ex:submit(function() return 2 end)))
  end)

  it("an oversized result fails only its task, reported by the worker; later tasks run", function()
    local f = track(ex:submit(function() return string.rep("y", 2 * LIMIT) end))
    local err = expect_error("serialization", f.result, f, WAIT)
    for _, text in ipairs { "result", "bytes", tostring(LIMIT), "big-w" } do
      assert.truthy(util.mentions(err, text), util.text(err))
    end
    w:wait_line({ "result is", "bytes" })
    for i = 1, 5 do assert.equal(i, result(ex:submit(function(x) return x end, i))) end
    assert.truthy(w:alive())
    assert.equal(1, ex:stats().failed)
  end)

  it("raises kind config for a max_message out of range", function()
    for _, v in ipairs { 0, 100, 1.5, "1000000", 2 ^ 40 } do
      local e = expect_error("config", weft.redis, { url = server.url, max_message = v })
      assert.truthy(util.mentions(e, "max_message"), util.text(e))
    end
  end)
end)
