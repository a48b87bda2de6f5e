--[[ timeouts.lua: a task that hangs on its first attempt, is stopped by its
timeout, and succeeds when retried.

    build/weft/weft run scripts/examples/timeouts.lua   (in the source tree)
    weft run timeouts.lua                               (after make install)

The task `fetch` has `timeout = 0.5` and `retries = 1`. Its first attempt
spins in `while true do end`, a loop that never calls anything; its second
attempt returns at once (an attempt counter in a temporary file decides, so
every run behaves the same).

A timeout STOPS the work, it does not just stop waiting for it: the flow
runs on a pool of ONE worker, first threads and then processes, and the
retry (and the task after it) can only run on that worker because the
spinning attempt was stopped there. Had the loop kept running, this script
would never end.
]]
local weft = require "weft"

local fetch = weft.task { name = "fetch", timeout = 0.5, retries = 1, retry_delay = 0.1,
  function(attempts_file)
    local f = assert(io.open(attempts_file))
    local attempt = (tonumber(f:read("a")) or 0) + 1
    f:close()
    f = assert(io.open(attempts_file, "w"))
    f:write(attempt)
    f:close()
    if attempt == 1 then
      weft.log.warn("attempt 1: the server does not answer (spinning until the timeout)")
      while true do end
    end
    weft.log.info("attempt %d: answered", attempt)
    return "payload from attempt " .. attempt
  end }

local store = weft.task { name = "store", function(payload)
  return "stored " .. payload
end }

local flow = weft.flow { name = "timeouts", function(attempts_file)
  return store(fetch(attempts_file))
end }

for _, spec in ipairs { "threads:1", "processes:1" } do
  local ex <close> = weft.executor(spec)
  local attempts_file = os.tmpname()
  local run = flow:run(attempts_file, { executor = ex })
  os.remove(attempts_file)

  print(string.format("on %s: flow %s: %s", spec, run.state, tostring(run.result)))
  for _, task in ipairs(run.tasks) do
    print(string.format("  %-6s %-10s attempts %d", task.name, task.state, task.attempts))
  end
  assert(run.state == "completed", tostring(run.error))
  assert(ex:stats().busy == 0, "a worker is still busy")
end

-- The same mechanism without a flow: weft.timeout.call runs a function
-- under a deadline where it is called, and raises kind "timeout" there.
local ok, err = pcall(weft.timeout.call, 0.2, function() while true do end end)
print(string.format("weft.timeout.call: %s (%s error)", ok and "returned" or "stopped",
                    weft.is(err, "timeout") and "timeout" or tostring(err)))
