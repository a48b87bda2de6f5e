-- weft.worker -- `weft worker URL [options]`: reads the options, builds the
-- local pool and serves the queue (the serving itself is C: rworker.c).

local weft = require "weft"
local core = require "weft.core"

local M = {}

M.usage = [[
usage: weft worker URL [options]

Serves the queue of a Redis executor (weft.redis): takes its tasks and runs
them in a local pool, enforcing each task's timeout here.  Start any number
of workers, on any machines; they can join and leave while flows run.

URL: redis://[user:password@]host[:port][/db][?queue=q]
     unix:///path/to/redis.sock[?db=n&queue=q]

options:
  --queue Q          the queue (default: the URL's, else "default")
  --workers N        tasks run at once (default: one per CPU)
  --threads          run tasks in threads of this process, not in child
                     processes (faster to start; a crashing task takes the
                     worker down, and its tasks are delivered again)
  --heartbeat S      seconds between heartbeats (default 1)
  --claim-idle S     take over a dead worker's tasks after S seconds without
                     its heartbeat (default 10; at least 2 heartbeats)
  --prefetch N       tasks held at once, running ones included (default:
                     the running ones plus about 50 ms of queued work by
                     the average task time, 1 to 16 more a worker)
  --name NAME        this worker's consumer name (default host:pid)
  --reconnect-window S
                     how long Redis may be unreachable (or answer LOADING,
                     BUSY, TRYAGAIN, MASTERDOWN) before the worker gives
                     up: it stops its running tasks (they stay in the
                     stream for other workers) and exits with status 1
                     (default 60)
  --max-message BYTES
                     the largest result the worker sends (default 64 MiB,
                     or the server's proto-max-bulk-len when smaller): a
                     larger one fails its task with kind serialization
  --allow-eviction   serve even when the server may evict keys (maxmemory
                     with a policy other than noeviction): a warning
                     instead of a refusal
  --require MODULE   require MODULE in every state that runs tasks, before
                     the first task (repeatable): where tasks' modules call
                     weft.register for the types their values carry
  --help             this text

environment: WEFT_SECRET, the secret messages are signed with (the same as
the clients').  Without it, anyone who can write to the queue can run code
on this machine.  A task this worker cannot take (unsigned while it has a
secret, signed while it has none or with another secret, another weft
version's, expired, or a replay) is refused: moved to the dead-letter
stream, never run, and its client's future fails with the reason.

Delivery is at least once: a task whose worker dies is run again by
another, so tasks should be idempotent.  SIGTERM (or Ctrl-C) stops taking
tasks; the running ones finish and their results are stored.
]]

local function fail(fmt, ...)
  error(setmetatable({ kind = "config", message = "weft worker: " .. fmt:format(...) },
                     { __tostring = function(e) return e.message end }), 0)
end

local function number(name, v, min)
  local n = tonumber(v)
  if not n or n ~= n or n < min or n > 1e6 then
    fail("%s needs a number of at least %g, got %s", name, min, tostring(v))
  end
  return n
end

-- Reads the arguments: the options table, or nil after printing help.
function M.parse(args)
  local o = { heartbeat = 1, claim_idle = 10, reconnect_window = 60 }
  local i = 1
  while i <= #args do
    local a = args[i]
    local function value()
      i = i + 1
      if args[i] == nil then fail("%s needs a value (see 'weft worker --help')", a) end
      return args[i]
    end
    if a == "--help" or a == "-h" then
      io.stdout:write(M.usage)
      return nil
    elseif a == "--queue" then o.queue = value()
    elseif a == "--workers" then
      local n = math.tointeger(tonumber(value()))
      if not n or n < 1 or n > core.max_workers then
        fail("--workers needs a whole number from 1 to %d, got %s", core.max_workers, args[i])
      end
      o.workers = n
    elseif a == "--threads" then o.threads = true
    elseif a == "--heartbeat" then o.heartbeat = number(a, value(), 0.01)
    elseif a == "--claim-idle" then o.claim_idle = number(a, value(), 0.05)
    elseif a == "--prefetch" then
      local n = math.tointeger(tonumber(value()))
      if not n or n < 1 or n > 100000 then
        fail("--prefetch needs a whole number from 1 to 100000, got %s", args[i])
      end
      o.prefetch = n
    elseif a == "--name" then o.name = value()
    elseif a == "--reconnect-window" then o.reconnect_window = number(a, value(), 0.1)
    elseif a == "--max-message" then
      local n = math.tointeger(tonumber(value()))
      if not n or n < 1024 or n > 512 * 1024 * 1024 then
        fail("--max-message needs a whole number of bytes from 1024 to 536870912, got %s", args[i])
      end
      o.max_message = n
    elseif a == "--allow-eviction" then o.allow_eviction = true
    elseif a == "--require" then
      o.requires = o.requires or {}
      o.requires[#o.requires + 1] = value()
    elseif a:sub(1, 1) == "-" then
      fail("unknown option %s (see 'weft worker --help')", a)
    elseif o.url then
      fail("one URL only, got %s and %s", o.url, a)
    else
      o.url = a
    end
    i = i + 1
  end
  if not o.url then fail("no URL (as in: weft worker redis://127.0.0.1:6379/0)") end
  if o.claim_idle < 2 * o.heartbeat then
    fail("--claim-idle (%g s) must be at least two heartbeats (2 x %g s): a live worker's "
         .. "tasks would be taken over", o.claim_idle, o.heartbeat)
  end
  return o
end

function M.main(args)
  local o = M.parse(args)
  if not o then return 0 end
  local secret = os.getenv("WEFT_SECRET")
  if secret == "" then secret = nil end
  local n = o.workers or core.default_workers()
  local requires = o.requires or {}
  -- Here first, so that a module that cannot load stops the worker at once
  -- instead of failing every task it takes.
  for _, name in ipairs(requires) do
    local ok, err = pcall(require, name)
    if not ok then fail("--require %s: %s", name, tostring(err)) end
  end
  local init = #requires > 0 and function(names)
    for _, name in ipairs(names) do require(name) end
  end or nil
  local pool, what
  if o.threads then
    pool = weft.threads { workers = n, name = "worker", init = init, init_args = { requires } }
    what = ("%d thread%s"):format(n, n == 1 and "" or "s")
  else
    pool = weft.processes { workers = n, name = "worker", init = init, init_args = { requires } }
    what = ("%d process%s"):format(n, n == 1 and "" or "es")
  end
  local queue = o.queue
  if not secret then
    io.stderr:write(("weft worker: warning: no secret (WEFT_SECRET) is set: anyone who can "
                     .. "write to the queue %s on this Redis can run code on this machine\n")
                    :format(queue or (o.url:match("[?&]queue=([^&]+)")) or "default"))
  end
  local status = core.redis_serve(pool, {
    url = o.url, queue = queue, secret = secret, heartbeat = o.heartbeat,
    claim_idle = o.claim_idle, name = o.name, prefetch = o.prefetch, what = what,
    reconnect_window = o.reconnect_window, max_message = o.max_message,
    allow_eviction = o.allow_eviction,
  })
  pool:shutdown()
  return status
end

return M
