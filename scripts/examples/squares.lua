--[[ squares.lua: a first weft flow (`make demo` runs it).

    LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;" \
      lua5.4 scripts/examples/squares.lua

1. ex:map squares a list on a thread pool and yields the results in order.
2. ex:submit counts the primes below 1,000,000 in 8 ranges at once;
   weft.wait waits for all of them.
]]
local weft = require "weft"

-- Runs in a worker thread: the function travels there as bytecode, and
-- `math` is the worker's own standard library.
local function count_primes(lo, hi)
  local count = 0
  for n = math.max(lo, 2), hi do
    local is_prime = true
    for d = 2, math.floor(math.sqrt(n)) do
      if n % d == 0 then
        is_prime = false
        break
      end
    end
    if is_prime then
      count = count + 1
    end
  end
  return count
end

-- One worker per CPU; `<close>` shuts the pool down (waiting for its
-- tasks) when the block ends, even on an error.
do
  local ex <close> = weft.threads{}

  -- 1. map: results come back in input order, whichever worker ran them.
  local squares = {}
  for i, sq in ex:map(function(x) return x * x end, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) do
    squares[i] = sq
  end
  print("squares of 1..10:  " .. table.concat(squares, " "))

  -- 2. submit + wait: one future per range, all running at once.
  local LIMIT, PARTS = 1000000, 8
  local step = LIMIT // PARTS
  local futures = {}
  for p = 1, PARTS do
    local lo, hi = (p - 1) * step + 1, p * step
    futures[p] = ex:submit(count_primes, lo, hi)
  end

  local done, not_done = weft.wait(futures)
  assert(#done == PARTS and #not_done == 0)

  local total = 0
  for p, f in ipairs(futures) do
    local n = f:result()
    print(string.format("  primes in %7d..%7d: %5d", (p - 1) * step + 1, p * step, n))
    total = total + n
  end
  print(string.format("primes below %d:  %d  (%d ranges on %d workers)",
    LIMIT, total, PARTS, ex:stats().workers))
  assert(total == 78498, "expected 78498 primes below 1,000,000")
end
