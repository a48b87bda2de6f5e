-- weft: parallel execution for Lua 5.4.
--
-- This is the thin Lua layer over the C core (weft.core): option tables,
-- executor specs, the default executor, tasks, map, gather; flows are in
-- weft/flow.lua.  Everything that moves values between states, waits or
-- runs tasks is in C.

local core = require "weft.core"

local weft = {
  version = core.version,
  Error = core.Error,
  Future = core.Future,
  Executor = core.Executor,
  ALL_COMPLETED = core.ALL_COMPLETED,
  FIRST_COMPLETED = core.FIRST_COMPLETED,
  FIRST_EXCEPTION = core.FIRST_EXCEPTION,
  future = core.future,
  is = core.is,
  sleep = core.sleep,
  log = require "weft.log",
  luv = require "weft.luv",
  core = core,       -- the C core: completion_fd, dispatch, now...
}

local flows = require "weft.flow"
flows.bind(weft)

local Executor = core.Executor
local is_future = core.is_future
local Error = core.Error
local math_type, type, select, pairs, ipairs = math.type, type, select, pairs, ipairs
local setmetatable, getmetatable, error = setmetatable, getmetatable, error
local min, max, ceil = math.min, math.max, math.ceil

-- Raises a weft.Error of `kind`; level 2 so the message points at the caller.
local function raise(kind, fmt, ...)
  error(core.error(kind, string.format(fmt, ...)), 0)
end

-- === options =============================================================

-- Checks an options table against a list of allowed keys.
local function check_opts(what, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    raise("config", "%s: options must be a table, got %s", what, type(opts))
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for name in pairs(allowed) do
        if type(name) == "string" then names[#names + 1] = name end
      end
      table.sort(names)
      raise("config", "%s: unknown option %s (known: %s)", what, tostring(k),
            table.concat(names, ", "))
    end
  end
  return opts
end

local function check_workers(what, n)
  if n == nil then return core.default_workers() end
  if math_type(n) ~= "integer" then
    if type(n) == "number" and n == math.floor(n) and n > 0 and n < 2^31 then
      n = math.tointeger(n)
    else
      raise("config", "%s: workers must be a positive integer, got %s", what,
            type(n) == "number" and tostring(n) or type(n))
    end
  end
  if n <= 0 then
    raise("config", "%s: workers must be a positive integer, got %d", what, n)
  end
  if n > core.max_workers then   -- (checked here too: a spec is checked before it is built)
    raise("config", "%s: workers must be at most %d, got %d", what, core.max_workers, n)
  end
  return n
end

local function check_timeout(what, t, field)
  if t == nil then return nil end
  if type(t) ~= "number" or t ~= t or t < 0 then
    raise("config", "%s: %s must be a non-negative number of seconds, got %s",
          what, field or "timeout", type(t) == "number" and tostring(t) or type(t))
  end
  return t
end

-- === executors ===========================================================

--- weft.inline{name=, timeout=}: runs each task in the caller, at submit time.
function weft.inline(opts)
  opts = check_opts("weft.inline", opts, { name = true, timeout = true })
  if opts.name ~= nil and type(opts.name) ~= "string" then
    raise("config", "weft.inline: name must be a string, got %s", type(opts.name))
  end
  local timeout = check_timeout("weft.inline", opts.timeout)
  return core.pool("inline", 1, opts.name, nil, nil, timeout)
end

local thread_opts = { workers = true, init = true, init_args = true,
                      timeout = true, name = true }

-- The options threads and processes share: workers, init, init_args, name.
local function check_pool_opts(what, opts)
  local n = check_workers(what, opts.workers)
  if opts.init ~= nil and type(opts.init) ~= "function" then
    raise("config", "%s: init must be a function, got %s", what, type(opts.init))
  end
  if opts.init_args ~= nil and type(opts.init_args) ~= "table" then
    raise("config", "%s: init_args must be a list, got %s", what, type(opts.init_args))
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then
    raise("config", "%s: name must be a string, got %s", what, type(opts.name))
  end
  return n
end

--- weft.threads{workers=, init=, init_args=, timeout=, name=}
function weft.threads(opts)
  opts = check_opts("weft.threads", opts, thread_opts)
  local n = check_pool_opts("weft.threads", opts)
  local timeout = check_timeout("weft.threads", opts.timeout)
  return core.pool("threads", n, opts.name, opts.init, opts.init_args, timeout)
end

local process_opts = { workers = true, init = true, init_args = true, timeout = true,
                       name = true, max_tasks_per_worker = true, kill_grace = true,
                       worker_path = true }

--- weft.processes{workers=, init=, init_args=, timeout=, max_tasks_per_worker=,
--- kill_grace=, name=, worker_path=}
function weft.processes(opts)
  local what = "weft.processes"
  opts = check_opts(what, opts, process_opts)
  local n = check_pool_opts(what, opts)
  local timeout = check_timeout(what, opts.timeout)
  local grace = check_timeout(what, opts.kill_grace, "kill_grace")
  local max_tasks = opts.max_tasks_per_worker
  if max_tasks ~= nil and (math_type(max_tasks) ~= "integer" or max_tasks < 1) then
    raise("config", "%s: max_tasks_per_worker must be a positive integer, got %s", what,
          tostring(max_tasks))
  end
  if opts.worker_path ~= nil and type(opts.worker_path) ~= "string" then
    raise("config", "%s: worker_path must be a string, got %s", what, type(opts.worker_path))
  end
  return core.pool("processes", n, opts.name, opts.init, opts.init_args, timeout,
                   { kill_grace = grace, max_tasks_per_worker = max_tasks,
                     worker_path = opts.worker_path })
end

local redis_opts = { url = true, queue = true, secret = true, timeout = true,
                     result_ttl = true, message_ttl = true, max_deliveries = true, name = true,
                     reconnect_window = true, max_message = true, allow_eviction = true }

--- weft.redis{url=, queue=, secret=, timeout=, result_ttl=, message_ttl=, max_deliveries=, name=,
---             reconnect_window=, max_message=, allow_eviction=}:
--- tasks go to a Redis stream and run on `weft worker` processes anywhere.
--- url: "redis://[user:password@]host[:port][/db][?queue=q]" or
--- "unix:///path/redis.sock[?db=n&queue=q]"; secret defaults to WEFT_SECRET.
function weft.redis(opts)
  local what = "weft.redis"
  opts = check_opts(what, opts, redis_opts)
  if type(opts.url) ~= "string" then
    raise("config", "%s: url must be a string (redis://host:port/db or unix:///path), got %s",
          what, type(opts.url))
  end
  for _, k in ipairs { "queue", "secret", "name" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      raise("config", "%s: %s must be a string, got %s", what, k, type(opts[k]))
    end
  end
  local timeout = check_timeout(what, opts.timeout)
  local ttl = opts.result_ttl
  if ttl ~= nil and (type(ttl) ~= "number" or ttl ~= ttl or ttl < 1 or ttl > 2^31) then
    raise("config", "%s: result_ttl must be a number of seconds from 1 to 2^31, got %s", what,
          tostring(ttl))
  end
  local mttl = opts.message_ttl
  if mttl ~= nil and (type(mttl) ~= "number" or mttl ~= mttl or mttl < 1 or mttl > 2^31) then
    raise("config", "%s: message_ttl must be a number of seconds from 1 to 2^31, got %s", what,
          tostring(mttl))
  end
  local md = opts.max_deliveries
  if md ~= nil and (math_type(md) ~= "integer" or md < 1 or md > 1000000) then
    raise("config", "%s: max_deliveries must be a positive integer, got %s", what, tostring(md))
  end
  local rw = opts.reconnect_window
  if rw ~= nil and (type(rw) ~= "number" or rw ~= rw or rw <= 0) then
    raise("config", "%s: reconnect_window must be a positive number of seconds, got %s", what,
          tostring(rw))
  end
  local mm = opts.max_message
  if mm ~= nil and (math_type(mm) ~= "integer" or mm < 1024 or mm > 512 * 1024 * 1024) then
    raise("config", "%s: max_message must be a whole number of bytes from 1024 to 512 MiB "
          .. "(536870912), got %s", what, tostring(mm))
  end
  if opts.allow_eviction ~= nil and type(opts.allow_eviction) ~= "boolean" then
    raise("config", "%s: allow_eviction must be a boolean, got %s", what,
          type(opts.allow_eviction))
  end
  local secret = opts.secret
  if secret == nil then secret = os.getenv("WEFT_SECRET") end
  if secret == "" then secret = nil end
  return core.pool("redis", 1, opts.name, nil, nil, timeout,
                   { url = opts.url, queue = opts.queue, secret = secret,
                     result_ttl = ttl, message_ttl = mttl, max_deliveries = md, reconnect_window = rw,
                     max_message = mm, allow_eviction = opts.allow_eviction })
end

-- Reads an executor spec string ("inline", "threads", "threads:8",
-- "processes", "processes:4", a redis:// or unix:// URL) without building anything: returns the
-- constructor's name and the worker count (nil for the default).  Raises
-- kind config for a bad spec, naming `what`.
local function parse_spec(what, spec)
  if type(spec) ~= "string" then
    raise("config", "%s: spec must be a string, got %s", what, type(spec))
  end
  local kind, colon, arg = spec:match("^(%a+)(:?)(.*)$")
  if colon == "" and arg ~= "" then kind = nil end
  if kind == "inline" and colon == "" then
    return kind
  elseif kind == "threads" or kind == "processes" then
    if colon == "" then return kind end
    local n = arg:match("^%d+$") and math.tointeger(tonumber(arg))
    if not n then
      raise("config", "%s: bad worker count in %q (expected %s:N)", what, spec, kind)
    end
    return kind, check_workers(what, n)
  elseif spec:match("^redis://") or spec:match("^unix://") then
    local err = core.redis_url_error(spec)
    if err then raise("config", "%s: %s", what, err) end
    return "redis", spec
  end
  raise("config", "%s: unknown executor spec %q (expected inline, threads, threads:N, "
        .. "processes, processes:N, redis://host:port/db?queue=q or unix:///path?queue=q)",
        what, spec)
end

local function build_spec(what, spec)
  local kind, n = parse_spec(what, spec)
  if kind == "inline" then return weft.inline() end
  if kind == "redis" then return weft.redis { url = n } end
  return weft[kind] { workers = n }
end

--- weft.executor(spec): "inline", "threads", "threads:8", "processes", "processes:4",
--- "redis://host:6379/0?queue=q", "unix:///path/redis.sock?queue=q";
--- an executor is returned as it is.
function weft.executor(spec)
  if core.is_executor(spec) then return spec end
  return build_spec("weft.executor", spec)
end

-- === the default executor ================================================

-- Flow runs given no executor share one, built on first use: so a script
-- can be run on threads or processes from outside (the weft program's
-- --executor, or WEFT_EXECUTOR) without changing it.
local default_spec     -- from set_default_executor; nil: WEFT_EXECUTOR, else "threads"
local default_built    -- built from a spec, on first use

--- weft.set_default_executor(spec): an executor or a spec string (nil: back
--- to WEFT_EXECUTOR or "threads").  Checks a spec at once; builds nothing.
--- A default executor built before is shut down (without waiting).
function weft.set_default_executor(spec)
  if spec ~= nil and not core.is_executor(spec) then
    parse_spec("weft.set_default_executor", spec)
  end
  if default_built then default_built:shutdown { wait = false } end
  default_spec, default_built = spec, nil
end

--- weft.default_executor() -> the executor of flow runs given none.
function weft.default_executor()
  if core.is_executor(default_spec) then return default_spec end
  if not default_built then
    local spec, what = default_spec, "weft.set_default_executor"
    if spec == nil then
      spec, what = os.getenv("WEFT_EXECUTOR"), "WEFT_EXECUTOR"
      if spec == nil or spec == "" then spec = "threads" end
    end
    default_built = build_spec(what, spec)
  end
  return default_built
end

-- === registered types ====================================================

--- weft.register(name, mt): a table whose metatable is `mt` crosses to
--- other states (task arguments, results, upvalues) with its metatable:
--- the receiving state re-attaches the metatable registered there under
--- `name`.  Register in the program and in each worker's `init`.  Other
--- metatables are dropped by the copy.
function weft.register(name, mt)
  if type(name) ~= "string" or name == "" then
    raise("config", "weft.register: the name must be a non-empty string, got %s",
          type(name) == "string" and "an empty string" or type(name))
  end
  if type(mt) ~= "table" then
    raise("config", "weft.register: the metatable of '%s' must be a table, got %s",
          name, type(mt))
  end
  core.register(name, mt)
  return mt
end

-- weft's own errors cross as errors: a weft.Error passed or returned is one
-- on the other side too.
core.register("weft.Error", Error)

-- === tasks ===============================================================

local Task = {}
Task.__index = Task
Task.__name = "weft.Task"
core._task_metatable(Task)

local task_opts = { [1] = true, fn = true, name = true, timeout = true,
                    retries = true, retry_delay = true }
local flow_opts = { [1] = true, fn = true, name = true }

local function is_task(v) return getmetatable(v) == Task end
weft.is_task = is_task

-- The function and the name of a task or flow spec (`what` is "task" or
-- "flow"); the name defaults to where the function is defined.
local function spec_function(what, spec)
  local fn = spec[1] or spec.fn
  if type(fn) ~= "function" then
    raise("config", "weft.%s: the first field must be the %s's function, got %s",
          what, what, type(fn))
  end
  local name = spec.name
  if name == nil then
    local info = debug.getinfo(fn, "S")
    name = info.short_src .. ":" .. info.linedefined
  elseif type(name) ~= "string" then
    raise("config", "weft.%s: name must be a string, got %s", what, type(name))
  end
  return fn, name
end

--- weft.task{fn, name=, timeout=, retries=, retry_delay=} (or weft.task(fn))
function weft.task(spec)
  if type(spec) == "function" then spec = { spec } end
  spec = check_opts("weft.task", spec, task_opts)
  local fn, name = spec_function("task", spec)
  local timeout = check_timeout("weft.task", spec.timeout)
  local retries = spec.retries or 0
  if math_type(retries) ~= "integer" or retries < 0 then
    raise("config", "weft.task: retries must be a non-negative integer, got %s", tostring(retries))
  end
  local delay = spec.retry_delay
  if type(delay) == "table" then
    for i, d in ipairs(delay) do check_timeout("weft.task", d, "retry_delay[" .. i .. "]") end
  elseif delay ~= nil then
    check_timeout("weft.task", delay, "retry_delay")
  end
  return setmetatable({ fn = fn, name = name, timeout = timeout, retries = retries,
                        retry_delay = delay }, Task)
end

--- task(...): inside a running flow, submits the call to the run's
--- executor and returns its future; outside, and inside a task (an inline
--- one runs in the flow's own state), a plain call of its function.
function Task:__call(...)
  local run = flows.running()
  if run and not core.in_task() then return run:submit(self, ...) end
  return self.fn(...)
end

--- task:map(...) -> list of futures (inside a flow; see weft/flow.lua).
Task.map = flows.map

function Task:__tostring()
  return string.format("weft.Task(%s)", self.name)
end

-- === flows ===============================================================

--- weft.flow{fn, name=} (or weft.flow(fn)) -> flow; flow:run(...) -> run
--- (see weft/flow.lua).
function weft.flow(spec)
  if type(spec) == "function" then spec = { spec } end
  spec = check_opts("weft.flow", spec, flow_opts)
  return flows.new(spec_function("flow", spec))
end

weft.unmapped = flows.unmapped
weft.observe_runs = flows.observe_runs

-- === timeouts ============================================================

weft.timeout = core.timeout

local function check_logger(logger)
  if logger == nil then return weft.log end
  for _, level in ipairs { "info", "warn", "error" } do
    local ok, f = pcall(function() return logger[level] end)
    if not ok or f == nil then
      raise("config", "run_task_with_timeout: the logger has no %s method", level)
    end
  end
  return logger
end

--- weft.run_task_with_timeout(task, args [, logger]) -> task's results
-- Runs a task (or a function) under its own timeout with the strongest
-- mechanism valid here (weft.timeout.call), logging start, end, timeout
-- and failure.
function weft.run_task_with_timeout(task, args, logger)
  local fn, name, timeout
  if is_task(task) then
    fn, name, timeout = task.fn, task.name, task.timeout
  elseif type(task) == "function" then
    fn, name = task, "function"
  else
    raise("config", "run_task_with_timeout: expected a weft.task or a function, got %s",
          type(task))
  end
  if args ~= nil and type(args) ~= "table" then
    raise("config", "run_task_with_timeout: args must be a list, got %s", type(args))
  end
  args = args or {}
  logger = check_logger(logger)
  local n = args.n or #args
  local started = core.now()
  local results
  if timeout == nil then
    logger:info(string.format("Task '%s': starting (no timeout)", name))
    results = table.pack(pcall(fn, table.unpack(args, 1, n)))
  else
    logger:info(string.format("Task '%s': starting with a %g s timeout (%s)", name, timeout,
                              core.timeout.mechanism()))
    results = table.pack(pcall(core.timeout.call, timeout, fn, table.unpack(args, 1, n)))
  end
  if not results[1] then
    local err = results[2]
    if core.is(err, "timeout") then
      logger:warn(string.format("Task '%s': timed out after %g s and was stopped", name, timeout))
    else
      logger:error(string.format("Task '%s': failed: %s", name, tostring(err)))
    end
    error(err, 0)
  end
  logger:info(string.format("Task '%s': finished in %.3f s", name, core.now() - started))
  return table.unpack(results, 2, results.n)
end

-- === map =================================================================

local map_opts = { timeout = true, chunksize = true, ordered = true,
                   spread = true, window = true }

local function bless(err)
  local e = err
  while type(e) == "table" and e.kind and getmetatable(e) == nil do
    setmetatable(e, Error)
    e = e.cause
  end
  return err
end

--- ex:map(fn, items [, opts]) -> iterator of (index, first result)
function Executor:map(fn, items, opts)
  if not core.is_executor(self) then
    raise("config", "map: expected an executor as self, got %s (call it as ex:map(...))", type(self))
  end
  self:_check_open("map")
  opts = check_opts("map", opts, map_opts)
  local stats = self:stats()             -- (one call: a Redis executor asks its server)
  -- A Redis executor counts the live workers of its queue: none yet is
  -- still somewhere to send to.
  local workers = max(stats.workers or 1, 1)
  local timeout = check_timeout("map", opts.timeout)
  local deadline = timeout and core.now() + timeout
  local list, nextitem
  if type(items) == "table" then
    list = items
  elseif type(items) == "function" then
    nextitem = items
  else
    raise("config", "map: items must be a list or an iterator function, got %s", type(items))
  end
  if type(fn) ~= "function" and not is_task(fn) then
    raise("config", "map: the task must be a function or a weft.task, got %s", type(fn))
  end
  -- A deadline or a retry is per call: such calls travel one per task.
  local single = is_task(fn) and (fn.timeout ~= nil or fn.retries > 0)
                 or stats.timeout ~= nil
  local chunksize = opts.chunksize
  if single then
    if chunksize ~= nil and (math_type(chunksize) ~= "integer" or chunksize < 1) then
      raise("config", "map: chunksize must be a positive integer, got %s", tostring(chunksize))
    end
    chunksize = 1
  elseif chunksize == nil then
    chunksize = list and max(1, min(1024, ceil(#list / (workers * 8)))) or 16
  elseif math_type(chunksize) ~= "integer" or chunksize < 1 then
    raise("config", "map: chunksize must be a positive integer, got %s", tostring(chunksize))
  end
  -- A Redis executor's tasks are a network trip away each way (and wait
  -- in its workers' prefetch): it takes more in flight to keep them busy.
  local depth = stats.kind == "redis" and 64 or 4
  local window = opts.window or max(2 * chunksize, depth * workers * chunksize)
  if math_type(window) ~= "integer" or window < 1 then
    raise("config", "map: window must be a positive integer, got %s", tostring(window))
  end
  local ordered = opts.ordered ~= false
  local spread = opts.spread and true or false
  local n = list and #list               -- items in a list
  local submitted = 0                    -- items sent so far
  local exhausted = false
  local inflight = 0                     -- items sent, not yet yielded
  local chunks = {}                      -- ordered: FIFO of chunk records
  local chead, ctail = 1, 0
  local pending = {}                     -- unordered: futures not yet done
  local byfuture = {}
  local cur, curpos                      -- chunk being yielded
  local buf = {}

  -- One call as its own task; a bad spread item fails only its future.
  local function submit_one(item, index)
    if not spread then return self:submit(fn, item) end
    if type(item) ~= "table" then
      local f = core.future()
      f:set_running_or_notify_cancel()
      f:set_exception(core.error("task", string.format(
        "map with spread: item %d is a %s, not a table of arguments", index, type(item))))
      return f
    end
    return self:submit(fn, table.unpack(item, 1, item.n or #item))
  end

  local function submit_next()
    local first = submitted + 1
    local fut, count
    if single then
      local item
      if list then
        if first > n then exhausted = true return false end
        item = list[first]
      else
        item = nextitem()
        if item == nil then exhausted = true return false end
      end
      fut = submit_one(item, first)
      count = 1
    elseif list then
      if first > n then exhausted = true return false end
      local last = min(n, submitted + chunksize)
      fut = self:_submit_chunk(fn, list, first, last, spread)
      count = last - first + 1
    else
      count = 0
      for k = 1, chunksize do
        local v = nextitem()
        if v == nil then exhausted = true break end
        buf[k] = v
        count = k
      end
      if count == 0 then return false end
      fut = self:_submit_chunk(fn, buf, 1, count, spread)
      for k = 1, count do buf[k] = nil end
    end
    local rec = { future = fut, first = first, count = count }
    submitted = submitted + count
    inflight = inflight + count
    if ordered then
      ctail = ctail + 1
      chunks[ctail] = rec
    else
      pending[#pending + 1] = fut
      byfuture[fut] = rec
    end
    return true
  end

  local function fill()
    while not exhausted and inflight + chunksize <= window do
      if not submit_next() then break end
    end
    if inflight == 0 and not exhausted then submit_next() end
  end

  local function remaining()
    if not deadline then return nil end
    local left = deadline - core.now()
    if left <= 0 then
      raise("timeout", "map: not finished within %g s", timeout)
    end
    return left
  end

  -- Waits for the next finished chunk; returns its record or nil at the end.
  local function next_chunk()
    fill()
    if ordered then
      local rec = chunks[chead]
      if not rec then return nil end
      chunks[chead] = nil
      chead = chead + 1
      if deadline and #core.wait({ rec.future }, remaining()) == 0 then
        raise("timeout", "map: not finished within %g s", timeout)
      end
      return rec
    end
    if #pending == 0 then return nil end
    local done = core.wait(pending, remaining(), core.FIRST_COMPLETED)
    if #done == 0 then raise("timeout", "map: not finished within %g s", timeout) end
    local f = done[1]
    for k = 1, #pending do
      if pending[k] == f then table.remove(pending, k) break end
    end
    local rec = byfuture[f]
    byfuture[f] = nil
    return rec
  end

  local function iterate()
    while true do
      if cur then
        local k = curpos
        if k <= cur.count then
          curpos = k + 1
          inflight = inflight - 1
          local errs = cur.errors
          if errs and errs[k] then error(bless(errs[k]), 0) end
          return cur.first + k - 1, cur.values[k]
        end
        cur = nil
      end
      local rec = next_chunk()
      if not rec then return nil end
      if single then
        inflight = inflight - 1
        local ok, value = pcall(rec.future.result, rec.future)
        if not ok then error(value, 0) end
        return rec.first, value
      end
      local ok, values, errs = pcall(rec.future.result, rec.future)
      if not ok then error(values, 0) end     -- the chunk as a whole failed
      rec.values, rec.errors = values, errs
      cur, curpos = rec, 1
    end
  end

  -- Closing the loop early (break, error) cancels what has not started.
  fill()   -- work starts now, not at the first iteration
  local closer = setmetatable({}, { __close = function()
    for k = chead, ctail do
      if chunks[k] then chunks[k].future:cancel() end
    end
    for _, f in ipairs(pending) do f:cancel() end
  end })
  return iterate, nil, nil, closer
end

-- === waiting =============================================================

local wait_opts = { timeout = true, return_when = true }

--- weft.wait(futures [, opts]) -> done, not_done
function weft.wait(futures, opts)
  opts = check_opts("weft.wait", opts, wait_opts)
  return core.wait(futures, opts.timeout, opts.return_when)
end

--- weft.as_completed(futures [, timeout])
function weft.as_completed(futures, timeout)
  return core.as_completed(futures, timeout)
end

--- weft.gather(x): x with every future replaced by its first result.
function weft.gather(x)
  local seen = {}
  local function walk(v)
    if is_future(v) then return (v:result()) end
    if type(v) ~= "table" or getmetatable(v) == Error then return v end
    if seen[v] then return seen[v] end
    local out = {}
    seen[v] = out
    for k, item in pairs(v) do out[k] = walk(item) end
    return out
  end
  return walk(x)
end

return weft
