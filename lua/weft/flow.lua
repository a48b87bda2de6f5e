-- weft.flow: flows, their runs, and task calls inside them (Prefect's model
-- over weft's executors).
--
-- While a flow body runs, calling a weft.task submits it to the run's
-- executor and returns its future instead of calling it.  The body reads
-- like sequential code, and the futures it hands from task to task are the
-- dependency graph: the C core holds a task until its dependencies are done
-- and fails it with kind "dependency" if one of them failed.  Nothing here
-- schedules anything.
--
-- A run ends only once everything it submitted has ended, awaited or not;
-- then it reports itself: its state, its result (the body's return value
-- with futures gathered), and one record per task run.
--
-- Runs nest: a flow run inside a flow body is a subflow with its own run.
-- `stack` holds the runs in progress in this Lua state, innermost last; a
-- task call goes to the innermost one.
--
-- init.lua binds this module to the weft table (for gather, executors and
-- the logger) and publishes weft.flow, weft.unmapped, weft.observe_runs,
-- task(...) and task:map(...).

local core = require "weft.core"

local is_future, is_executor = core.is_future, core.is_executor
local type, select, ipairs, pcall, error, next = type, select, ipairs, pcall, error, next
local setmetatable, getmetatable, tostring = setmetatable, getmetatable, tostring
local pack, unpack = table.pack, table.unpack

local flows = {}

local weft          -- the weft table, set by flows.bind
local stack = {}    -- contexts of the runs in progress, innermost last
local observers = {}

-- Raises a weft.Error of `kind` (`extra` adds fields such as cause).
local function raise(kind, extra, fmt, ...)
  error(core.error(kind, string.format(fmt, ...), extra), 0)
end

--- flows.bind(weft): gives this module the weft table it builds on.
function flows.bind(w)
  weft = w
end

-- === runs in progress ====================================================

-- What the machinery knows about a run in progress; `run` is the public
-- table the caller and the observers get.
local Context = {}
Context.__index = Context

-- Submits a task call to the run's executor and records it.  The record is
-- filled in when the run ends; until then its future tells how it goes.
function Context:submit(task, ...)
  local future = self.executor:submit(task, ...)
  self.futures[#self.futures + 1] = future
  local tasks = self.run.tasks
  tasks[#tasks + 1] = { name = task.name, future = future }
  return future
end

--- flows.running() -> the innermost run in progress (a context), or nil.
function flows.running()
  return stack[#stack]
end

-- Picks the run's executor: the one given (a spec string builds one for
-- this run only), else the enclosing run's, else the default executor.
local function open(flow, opts, parent)
  local executor, owned = opts and opts.executor, false
  if type(executor) == "string" then
    executor, owned = weft.executor(executor), true
  elseif executor == nil then
    executor = parent and parent.executor or weft.default_executor()
  end
  local run = { name = flow.name, tasks = {}, started = core.now(),
                parent = parent and parent.run }
  return setmetatable({ run = run, executor = executor, owned = owned, futures = {} },
                      Context)
end

-- Makes ctx the innermost run, and the flow's name the label tasks carry,
-- until the returned value is closed.  A to-be-closed variable, because an
-- interrupt is raised at whatever instruction runs when it arrives: the
-- stack and the label must come back however this scope is left.
local function enter(ctx)
  local depth = #stack + 1
  stack[depth] = ctx
  local previous = core.set_flow(ctx.run.name)
  return setmetatable({}, { __close = function()
    for k = #stack, depth, -1 do stack[k] = nil end
    core.set_flow(previous)
  end })
end

local function call_body(ctx, fn, args, n)
  local _ <close> = enter(ctx)
  return pcall(fn, unpack(args, 1, n))
end

-- On an interrupt the run stops its tasks rather than waiting for them.
-- A forced cancel settles a future at once; the wait is for any that
-- raced to the end on their own (it may itself be interrupted: ignored).
local function stop(ctx)
  for _, future in ipairs(ctx.futures) do
    if not future:done() then future:cancel { force = true } end
  end
  pcall(core.wait, ctx.futures)
end

-- === reports =============================================================

local record_states = { finished = "completed", failed = "failed", cancelled = "cancelled" }

-- Fills a task record from its finished future.
local function settle(record)
  local future = record.future
  local info = future:info()
  record.state = record_states[future:state()]
  record.attempts = info.attempts
  record.worker = info.worker
  record.start, record.finish = info.started, info.finished
  -- exception() returns a failure's error and raises a cancellation's.
  local _, err = pcall(future.exception, future)
  record.error = err
end

-- Ends the run: records, state, error, result.  The error is the body's if
-- it raised, else the first failed task's (in submission order, so a root
-- cause comes before the dependency failures it caused), else a failure
-- met while gathering the result (a future from outside the run).
local function close(ctx, body_ok, value)
  local run = ctx.run
  local ok, err = body_ok, value
  for _, record in ipairs(run.tasks) do
    settle(record)
    if ok and record.state ~= "completed" then ok, err = false, record.error end
  end
  if body_ok then
    local gathered, result = pcall(weft.gather, value)
    if gathered then
      run.result = result
    elseif ok then
      ok, err = false, result
    end
  end
  run.state = ok and "completed" or "failed"
  if not ok then run.error = err end
  run.finished = core.now()
  if ctx.owned then ctx.executor:shutdown { wait = true } end
end

-- Tells every observer; an observer's error is logged and ignored, so a
-- broken report never changes a run.
local function notify(event, run)
  for _, fn in ipairs { unpack(observers) } do   -- a copy: fn may unobserve
    local ok, err = pcall(fn, event, run)
    if not ok then
      weft.log.warn("weft.observe_runs: an observer failed on %s of flow %s: %s",
                    event, run.name, tostring(err))
    end
  end
end

--- flows.observe_runs(fn) -> unobserve: fn(event, run) at "start" and
--- "finish" of every flow run in this state, subflows included.
function flows.observe_runs(fn)
  if type(fn) ~= "function" then
    raise("config", nil, "weft.observe_runs: expected a function, got %s", type(fn))
  end
  local entry = function(event, run) return fn(event, run) end   -- one per call
  observers[#observers + 1] = entry
  return function()
    for k, other in ipairs(observers) do
      if other == entry then table.remove(observers, k) return end
    end
  end
end

-- === flows ===============================================================

local Flow = {}
Flow.__index = Flow
Flow.__name = "weft.Flow"

--- flows.new(fn, name) -> flow (weft.flow has checked both).
function flows.new(fn, name)
  return setmetatable({ fn = fn, name = name }, Flow)
end

function Flow:__tostring()
  return string.format("weft.Flow(%s)", self.name)
end

-- flow:run's last argument is its options when it is a table whose only
-- key is `executor` (so a body argument shaped like that needs an options
-- table after it).  Returns the number of body arguments and the options.
local function split_options(args)
  local last = args[args.n]
  if type(last) ~= "table" or getmetatable(last) ~= nil
     or next(last) ~= "executor" or next(last, "executor") ~= nil then
    return args.n, nil
  end
  local ex = last.executor
  if type(ex) ~= "string" and not is_executor(ex) then
    raise("config", nil, "flow:run: executor must be an executor or a spec string, got %s",
          type(ex))
  end
  return args.n - 1, last
end

--- flow:run(... [, {executor = ex}]) -> run
-- Calls the body with the arguments; task calls in it go to `ex` (an
-- executor or a spec such as "processes:4"; default: the enclosing run's
-- executor, else weft.default_executor()).  Returns the run table:
--   name, state ("completed" or "failed"), result, error, started, finished,
--   parent (the enclosing run, for a subflow), tasks = { record... } with
--   record = { name, state ("completed", "failed" or "cancelled"), attempts,
--              worker, start, finish, error, future }.
-- A failed run is returned, not raised; only an interrupt is re-raised,
-- after the run's unfinished tasks were cancelled and the run reported.
function Flow:run(...)
  if getmetatable(self) ~= Flow then
    raise("config", nil, "flow:run: call it with a colon, as flow:run(...)")
  end
  local args = pack(...)
  local n, opts = split_options(args)
  local ctx = open(self, opts, stack[#stack])
  notify("start", ctx.run)
  local ok, value = call_body(ctx, self.fn, args, n)
  if ok or not core.interrupted() then
    -- Everything the body submitted ends before the run does.
    local waited, err = pcall(core.wait, ctx.futures)
    if not waited then ok, value = false, err end
  end
  local interrupted = not ok and core.interrupted()
  if interrupted then stop(ctx) end
  close(ctx, ok, value)
  notify("finish", ctx.run)
  if interrupted then error(value, 0) end
  return ctx.run
end

-- === task:map ============================================================

local Unmapped = { __name = "weft.unmapped" }

--- flows.unmapped(v): v as an argument of task:map, given whole to every call.
function flows.unmapped(v)
  return setmetatable({ value = v }, Unmapped)
end

-- One argument of task:map: returns the list to map over, or nil and the
-- value every call gets.  A future is an upstream task whose result (a
-- list) is waited for here: the number of calls depends on it.
local function map_argument(i, v)
  if getmetatable(v) == Unmapped then return nil, v.value end
  if is_future(v) then
    local ok, result = pcall(v.result, v)
    if not ok then
      if core.interrupted() then error(result, 0) end
      raise("dependency", { cause = result },
            "task:map: argument %d is a future that did not succeed", i)
    end
    if type(result) ~= "table" then
      raise("config", nil, "task:map: argument %d is a future whose result is a %s, not a list",
            i, type(result))
    end
    return result
  end
  if type(v) ~= "table" then
    raise("config", nil, "task:map: argument %d is a %s, not a list "
          .. "(wrap it in weft.unmapped to give it whole to every call)", i, type(v))
  end
  return v
end

--- task:map(...) -> list of futures, one per item (inside a flow).
-- List arguments are zipped: call k gets the k-th item of each list, and
-- weft.unmapped(v) arguments whole.
function flows.map(task, ...)
  local ctx = stack[#stack]
  if not ctx then
    raise("config", nil, "task:map: no flow is running (call it inside a flow body, "
          .. "or use ex:map(task, items) on an executor)")
  end
  local n = select("#", ...)
  local lists, whole = {}, {}
  local length, first
  for i = 1, n do
    local list, value = map_argument(i, (select(i, ...)))
    if not list then
      whole[i] = value
    elseif not length then
      length, first, lists[i] = #list, i, list
    elseif #list ~= length then
      raise("config", nil, "task:map: arguments have different lengths (%d and %d: "
            .. "arguments %d and %d)", length, #list, first, i)
    else
      lists[i] = list
    end
  end
  if not length then
    raise("config", nil, "task:map: no list to map over (weft.unmapped arguments "
          .. "go whole to every call)")
  end
  local futures, call = {}, {}
  for k = 1, length do
    for i = 1, n do
      if lists[i] then call[i] = lists[i][k] else call[i] = whole[i] end
    end
    futures[k] = ctx:submit(task, unpack(call, 1, n))
  end
  return futures
end

return flows
