--[[ redis_map: trivial tasks through Redis, end to end, with ex:map.

A private redis-server (Unix socket) and 2 local `weft worker` processes,
each --workers 1 (see redislib.lua for the setup and the cleanup). Then
ex:map(function(x) return x + 1 end, {1 .. N}, {chunksize = 1}) on
weft.redis{url = ..., queue = ...}: every item is its own task through
the stream (XADD, a worker's XREADGROUP, its result back to the client),
so items/s here is tasks/s. map's own window is used (64 x workers x
chunksize items in flight for a Redis executor), and the workers' own
prefetch (their running task plus about 50 ms of queued ones: 17 each for
tasks this short). Every result is checked. Prints tasks per second, best
of 3 runs after a warm-up; the note also gives items/s with
chunksize = 100 (100 items per task, best of 3).

The workers run --threads (10-30 % faster than child processes here).
WEFT_BENCH_REDIS_THREADS (1 or 0) and WEFT_BENCH_REDIS_PREFETCH (a number,
or "default") override them, to try others. The note says which were used.

"Baseline": redis_map.py, redis-benchmark's XADD rate on the same kind of
server, the ceiling a task queue on it cannot pass.
]]
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/benchlib.lua")
local redis = dofile((arg[0]:match("^(.*)/") or ".") .. "/redislib.lua")
local weft = require "weft"

local N = 20000          -- items (= tasks) per timed run with chunksize 1
local N_WARM = 2000
local N_CHUNKED = 200000 -- items per timed run with chunksize 100
local CHUNKED = 100
local RUNS = 3
-- A bound on one map call, far above a normal run (about 2 s): with no
-- live worker left the tasks would wait in the stream for good, and this
-- reports that instead of the runner's time limit.
local MAP_TIMEOUT = 20

local threads = redis.setting("WEFT_BENCH_REDIS_THREADS", 1) == 1
local prefetch = redis.setting("WEFT_BENCH_REDIS_PREFETCH", nil)   -- nil: the worker's own

local function inc(x)
  return x + 1
end

local function list(n)
  local items = {}
  for i = 1, n do items[i] = i end
  return items
end

-- One run: seconds to map inc over items with this chunksize, every
-- result read in order and checked.
local function once(ex, items, chunksize, check)
  local n = #items
  local t0 = bench.now()
  local count = 0
  for i, v in ex:map(inc, items, {chunksize = chunksize, timeout = MAP_TIMEOUT}) do
    count = count + 1
    assert(i == count, "map yielded item " .. tostring(i) .. " at place " .. count)
    assert(v == i + 1, "item " .. i .. ": wrong result " .. tostring(v))
    if count % 1000 == 0 then check() end
  end
  check()
  local elapsed = bench.now() - t0
  assert(count == n, "map yielded " .. count .. " of " .. n .. " items")
  return elapsed
end

redis.with_workers({ workers = 2, threads = threads, prefetch = prefetch }, function(url, setup)
  local ex = weft.redis{url = url, queue = redis.QUEUE, secret = redis.SECRET}
  local ok, err = pcall(function()
    local items, chunked = list(N), list(N_CHUNKED)
    once(ex, list(N_WARM), 1, setup.check)
    once(ex, list(N_WARM * CHUNKED // 10), CHUNKED, setup.check)
    local best = bench.best_of(RUNS, function() return once(ex, items, 1, setup.check) end)
    local best_chunked = bench.best_of(RUNS, function() return once(ex, chunked, CHUNKED, setup.check) end)
    local stats = ex:stats()
    assert(stats.failed == 0 and stats.dead_lettered == 0,
      ("stats: %d failed, %d dead-lettered"):format(stats.failed, stats.dead_lettered))
    bench.result("tasks_per_s", N / best,
                 "tasks", N, "chunksize", 1, "runs", RUNS,
                 "chunked_items_per_s", N_CHUNKED / best_chunked, "chunked_chunksize", CHUNKED,
                 "redelivered", stats.redelivered,
                 "note", ("%s; chunksize=%d: %.0f items/s"):format(
                   setup.describe, CHUNKED, N_CHUNKED / best_chunked))
  end)
  ex:shutdown()
  if not ok then error(err, 0) end
end)
