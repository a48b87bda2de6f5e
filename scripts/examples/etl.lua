--[[ etl.lua: an ETL flow -- extract, a transform mapped over every record,
a flaky load that is retried, and a summary read back from what was loaded.

    build/weft/weft run scripts/examples/etl.lua        (in the source tree;
                                                         `make demo` runs it)
    weft run etl.lua                                    (after make install)
    WEFT_LOG_LEVEL=debug weft run etl.lua               (one log line per row)

    extract(n) --> transform:map(orders, unmapped(rates)) --> load(rows) --> summarize

Inside a flow body, calling a task submits it and returns a future; a
future passed to another task is a dependency, so the body reads like
sequential code and the tasks run as soon as their inputs are ready.
transform:map makes one task run per order; weft.unmapped(rates) gives the
whole rate table to every one of them. The load step fails twice (the
"warehouse" is busy: an attempt counter in a temporary file decides, so
every run behaves the same) and succeeds on its third attempt, after the
retry delays. weft.log lines from the tasks go to stderr; the results go
to stdout.
]]
local weft = require "weft"

-- Extract: a deterministic batch of orders (a stand-in for reading a file
-- or an API). Every task runs in a worker: it sees its arguments and
-- upvalues (copied; `weft` is required again there), not this script's
-- globals.
local extract = weft.task { name = "extract", function(n)
  local customers = { "acme", "globex", "initech", "umbrella" }
  local currencies = { "EUR", "USD", "GBP" }
  local orders, x = {}, 2024
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648   -- a small LCG
    orders[i] = {
      id = i,
      customer = customers[x % #customers + 1],
      currency = currencies[(x // 16) % #currencies + 1],
      cents = 500 + x % 20000,
    }
  end
  weft.log.info("extracted %d orders", n)
  return orders
end }

-- Transform: one order into a warehouse row, in euro cents. `rates` is in
-- euro per 1000 units of the currency (integers keep the sums exact).
local transform = weft.task { name = "transform", function(order, rates)
  local rate = assert(rates[order.currency], "no rate for " .. order.currency)
  local eur = order.cents * rate // 1000
  weft.log.debug("order %d: %d %s cents -> %d EUR cents", order.id, order.cents,
                 order.currency, eur)
  return { id = order.id, customer = order.customer, eur_cents = eur }
end }

-- Load: writes the rows to the warehouse (a CSV file). The connection is
-- flaky: attempts 1 and 2 fail. `retries = 3` allows three more attempts
-- after the first, waiting 0.1 s, then 0.2 s, then 0.4 s before them.
local load = weft.task { name = "load", retries = 3, retry_delay = { 0.1, 0.2, 0.4 },
  function(rows, warehouse, attempts_file)
    local f = assert(io.open(attempts_file))
    local attempt = (tonumber(f:read("a")) or 0) + 1
    f:close()
    f = assert(io.open(attempts_file, "w"))
    f:write(attempt)
    f:close()
    if attempt < 3 then
      weft.log.warn("load attempt %d: warehouse busy", attempt)
      error(string.format("warehouse busy (attempt %d)", attempt))
    end
    local out = assert(io.open(warehouse, "w"))
    for _, row in ipairs(rows) do
      out:write(string.format("%d,%s,%d\n", row.id, row.customer, row.eur_cents))
    end
    out:close()
    weft.log.info("load attempt %d: wrote %d rows", attempt, #rows)
    return #rows
  end }

-- Summarize: reads the warehouse back. `loaded` is load's result, which
-- also makes this task wait for the load.
local summarize = weft.task { name = "summarize", function(warehouse, loaded)
  local by_customer, rows = {}, 0
  for line in io.lines(warehouse) do
    local customer, cents = line:match("^%d+,([^,]+),(%d+)$")
    by_customer[customer] = (by_customer[customer] or 0) + tonumber(cents)
    rows = rows + 1
  end
  assert(rows == loaded, "the warehouse holds " .. rows .. " rows, load wrote " .. loaded)
  weft.log.info("summarized %d rows", rows)
  return { rows = rows, by_customer = by_customer }
end }

local etl = weft.flow { name = "etl", function(n, rates, warehouse, attempts_file)
  local orders = extract(n)                                 -- a future
  local rows = transform:map(orders, weft.unmapped(rates))  -- a list of futures
  local loaded = load(rows, warehouse, attempts_file)
  return summarize(warehouse, loaded)                       -- gathered into run.result
end }

local RATES = { EUR = 1000, USD = 920, GBP = 1170 }
local warehouse, attempts_file = os.tmpname(), os.tmpname()
local run = etl:run(24, RATES, warehouse, attempts_file)
os.remove(warehouse)
os.remove(attempts_file)

if run.state ~= "completed" then
  io.stderr:write("etl failed: ", tostring(run.error), "\n")
  os.exit(1)
end

-- The run's result: the summary.
local summary = run.result
print(string.format("rows loaded: %d", summary.rows))
local customers = {}
for name in pairs(summary.by_customer) do customers[#customers + 1] = name end
table.sort(customers)
local total = 0
for _, name in ipairs(customers) do
  local cents = summary.by_customer[name]
  print(string.format("  %-10s %10.2f EUR", name, cents / 100))
  total = total + cents
end
print(string.format("total revenue: %.2f EUR", total / 100))

-- The run record: one entry per task run, in submission order.
local runs, order = {}, {}
for _, task in ipairs(run.tasks) do
  local r = runs[task.name]
  if not r then
    r = { count = 0, states = {}, attempts = 0 }
    runs[task.name], order[#order + 1] = r, task.name
  end
  r.count = r.count + 1
  r.states[task.state] = (r.states[task.state] or 0) + 1
  r.attempts = r.attempts + task.attempts
end
print("task runs (from run.tasks):")
for _, name in ipairs(order) do
  local r = runs[name]
  local states = {}
  for state, k in pairs(r.states) do states[#states + 1] = k .. " " .. state end
  table.sort(states)
  print(string.format("  %-10s runs %-3d %-14s attempts %d", name, r.count,
                      table.concat(states, ", "), r.attempts))
end
