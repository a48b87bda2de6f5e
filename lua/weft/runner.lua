-- weft.runner: what `weft run` does around a script.
--
-- The weft program (runtime/cli/weft.c) parses the command line and runs
-- the script; this module does the rest, in the script's own state:
--
--   local session = runner.start(options)   -- before the script
--   ... the script runs ...
--   local status = session:finish(outcome, message)   -- the exit status
--
-- start() sets the default executor of flows (--executor, --workers,
-- WEFT_EXECUTOR), the log level, and three hooks of the C core:
--
--   core.set_log_sink   log records (the script's and its tasks', from any
--                       worker) become one stderr line each:
--                       time, level, [flow/task#attempt on worker], message
--   core.set_ticker     while tasks are in flight and stderr is a terminal,
--                       one live line redrawn in place: done/total, running,
--                       failed, rate, elapsed (summed over core.executors())
--   weft.observe_runs   each flow run, for the summary table printed after
--                       it and for the report
--
-- Anything written on stderr goes through Session:say, which clears the
-- live line first and redraws it after, so log lines scroll above it.
--
-- finish() clears the live line, writes the --report JSON (every flow run
-- with every task run), and returns the exit status: 130 interrupted, 1 the
-- script raised or a flow failed, else 0.
--
-- runner.repl() is the REPL's part: the same log lines, nothing else.

local weft = require "weft"
local cjson = require("cjson").new()   -- our own instance: settings stay ours

local core = weft.core
local format, concat, floor, max = string.format, table.concat, math.floor, math.max
local stderr = io.stderr

local runner = {}

local TICK = 0.1                       -- seconds between redraws of the live line
local CLEAR = "\r\27[2K"               -- carriage return, erase the line
local LEVELS = { debug = true, info = true, warn = true, error = true }

-- Raises a usage error: the program prints its message and exits 2.
local function usage_error(fmt, ...)
  error(core.error("config", format(fmt, ...)), 0)
end

-- === formatting ==========================================================

local function clock(epoch)
  local whole = floor(epoch)
  return format("%s.%03d", os.date("%H:%M:%S", whole), floor((epoch - whole) * 1000))
end

-- Elapsed time on the live line: one decimal, then minutes.
local function elapsed_text(s)
  if s < 60 then return format("%.1fs", s) end
  return format("%dm%02ds", floor(s / 60), floor(s % 60))
end

local function seconds(s)
  if s == nil then return "-" end
  if s < 1 then return format("%.3fs", s) end
  if s < 60 then return format("%.2fs", s) end
  return format("%dm%02ds", floor(s / 60), floor(s % 60))
end

-- "[flow/task#attempt on worker] " for a record made in a task or flow.
local function record_context(r)
  local where = {}
  if r.flow then where[#where + 1] = r.flow end
  if r.task then
    where[#where + 1] = r.task .. (r.attempt and ("#" .. r.attempt) or "")
  end
  local text = concat(where, "/")
  if r.worker then text = text .. (text ~= "" and " on " or "on ") .. r.worker end
  return text ~= "" and ("[" .. text .. "] ") or ""
end

local function log_line(r)
  return format("%s %-5s %s%s\n", clock(r.time), r.level:upper(), record_context(r),
                tostring(r.message))
end

-- The first line of an error, for a table cell.
local function first_line(err)
  local text = type(err) == "table" and err.message or tostring(err)
  return (tostring(text):match("^[^\n]*"))
end

-- === the session =========================================================

local Session = {}
Session.__index = Session

-- The executor spec: --executor, else WEFT_EXECUTOR, else "threads"; a
-- --workers count replaces the spec's.  Checked now (nothing is built).
local function executor_spec(opts)
  local spec, from = opts.executor, "--executor"
  if spec == nil then
    spec, from = os.getenv("WEFT_EXECUTOR"), "WEFT_EXECUTOR"
    if spec == nil or spec == "" then spec, from = "threads", nil end
  end
  local ok, err = pcall(weft.set_default_executor, spec)
  if not ok then
    usage_error("%s: %s", from or "executor",
                (first_line(err):gsub("^weft%.set_default_executor: ", "")))
  end
  if opts.workers ~= nil then
    local n = opts.workers:match("^%d+$") and math.tointeger(tonumber(opts.workers))
    if not n or n < 1 then
      usage_error("--workers: expected a positive integer, got '%s'", opts.workers)
    end
    local kind = spec:match("^(%a+)")
    if kind ~= "threads" and kind ~= "processes" then
      usage_error("--workers: the %s executor has no workers (use threads or processes)",
                  spec)
    end
    spec = kind .. ":" .. n
    weft.set_default_executor(spec)
  end
  return spec
end

-- The report file is created now, so that a path that cannot be written
-- is a usage error before anything runs.
local function open_report(path)
  local f, err = io.open(path, "w")
  if not f then usage_error("--report: cannot write %s", err) end
  f:close()
  return path
end

--- runner.start(opts) -> session.  opts (from the program): script, arg,
--- executor, workers, log_level, report (strings or nil), progress, tty.
function runner.start(opts)
  if opts.log_level ~= nil then
    if not LEVELS[opts.log_level] then
      usage_error("--log-level: unknown level '%s' (debug, info, warn or error)",
                  opts.log_level)
    end
    weft.log.set_level(opts.log_level)
  end
  local self = setmetatable({
    script = opts.script,
    arg = opts.arg or {},
    executor = executor_spec(opts),
    report = opts.report and open_report(opts.report),
    summaries = opts.progress ~= false,
    live = opts.progress ~= false and opts.tty == true,
    offset = core.wallclock() - core.now(),   -- core.now() time -> epoch
    started = core.now(),
    runs = {},              -- finished flow runs, in order
    depth = 0,              -- flow runs in progress
    failed = false,         -- a top-level flow run failed
    shown = false,          -- the live line is on the screen
  }, Session)
  core.set_log_sink(function(record) self:say(log_line(record)) end)
  self.unobserve = weft.observe_runs(function(event, run) self:observe(event, run) end)
  if self.live then
    core.set_ticker(function() self:tick() end, TICK)
    self:wrap_print()
  end
  self:wrap_exit()
  return self
end

-- os.exit ends the program without returning to it: finish first, so the
-- live line is cleared and the report written.
function Session:wrap_exit()
  local exit = os.exit
  os.exit = function(code, close)
    local status = code
    if code == nil or code == true then
      status = 0
    elseif code == false then
      status = 1
    end
    self:finish("exited", nil, math.tointeger(status) or 1)
    return exit(code, close)
  end
end

-- Writes text on stderr, above the live line.
function Session:say(text)
  if self.shown then stderr:write(CLEAR) end
  stderr:write(text)
  if self.shown then stderr:write(self.line) end
  stderr:flush()
end

-- print() on a terminal shared with the live line: clear it first (the
-- next tick redraws it).
function Session:wrap_print()
  local print = print
  _G.print = function(...)
    if self.shown then
      stderr:write(CLEAR)
      stderr:flush()
      self.shown = false
    end
    return print(...)
  end
end

-- === the live line =======================================================

-- Sums stats over every executor of this state.
local function totals()
  local t = { done = 0, running = 0, queued = 0, failed = 0 }
  for _, ex in ipairs(core.executors()) do
    local ok, s = pcall(ex.stats, ex)
    if not ok then s = {} end
    t.done = t.done + (s.completed or 0) + (s.failed or 0) + (s.cancelled or 0)
    t.failed = t.failed + (s.failed or 0)
    t.running = t.running + (s.busy or 0)
    t.queued = t.queued + (s.queued or 0)
  end
  return t
end

-- One period of work is counted from zero: it starts when a flow run
-- starts (or tasks are in flight outside one) and ends when none are left
-- outside a flow.
function Session:tick()
  local t, now = totals(), core.now()
  local inflight = t.running + t.queued
  if inflight == 0 and self.depth == 0 then
    if self.shown then stderr:write(CLEAR) stderr:flush() end
    self.shown, self.period = false, nil
    return
  end
  local p = self.period or self:new_period(t)
  local done, elapsed = t.done - p.done, now - p.start
  self.line = format("%s%d/%d done | %d running | %d failed | %.1f/s | %s",
                     self.label and ("[" .. self.label .. "] ") or "",
                     done, done + inflight, t.running, t.failed - p.failed,
                     elapsed > 0 and done / elapsed or 0, elapsed_text(elapsed))
  stderr:write(CLEAR, self.line)
  stderr:flush()
  self.shown = true
end

-- Starts counting from the totals t (from now).
function Session:new_period(t)
  t = t or totals()
  self.period = { start = core.now(), done = t.done, failed = t.failed }
  return self.period
end

function Session:clear_live()
  if self.shown then stderr:write(CLEAR) stderr:flush() end
  self.shown = false
end

-- === flow runs ===========================================================

-- Rows of the summary: one per task name and state, in order of first
-- appearance (a mapped task's runs share a row).
local function summary_rows(run)
  local rows, by = {}, {}
  for _, rec in ipairs(run.tasks) do
    local key = tostring(rec.name) .. "\0" .. tostring(rec.state)
    local row = by[key]
    if not row then
      row = { name = tostring(rec.name), state = tostring(rec.state), runs = 0, attempts = 0 }
      by[key] = row
      rows[#rows + 1] = row
    end
    row.runs = row.runs + 1
    row.attempts = row.attempts + (rec.attempts or 0)
    if rec.start and rec.finish then   -- wall time from first start to last finish
      row.first = row.first and math.min(row.first, rec.start) or rec.start
      row.last = row.last and max(row.last, rec.finish) or rec.finish
    end
  end
  return rows
end

local function summary(run)
  local rows = summary_rows(run)
  local failed = 0
  for _, rec in ipairs(run.tasks) do
    if rec.state ~= "completed" then failed = failed + 1 end
  end
  local out = { format("flow %s: %s in %s (%d task run%s, %d not completed)\n",
                       tostring(run.name), tostring(run.state),
                       seconds((run.finished or 0) - (run.started or 0)),
                       #run.tasks, #run.tasks == 1 and "" or "s", failed) }
  if #rows > 0 then
    local w = #"task"
    for _, row in ipairs(rows) do w = max(w, math.min(#row.name, 40)) end
    local fmt = "  %-" .. w .. "s  %-9s  %4s  %8s  %9s\n"
    out[#out + 1] = format(fmt, "task", "state", "runs", "attempts", "duration")
    for _, row in ipairs(rows) do
      out[#out + 1] = format(fmt, row.name:sub(1, 40), row.state, row.runs, row.attempts,
                             seconds(row.first and row.last - row.first))
    end
  end
  if run.error ~= nil then out[#out + 1] = "  error: " .. first_line(run.error) .. "\n" end
  return concat(out)
end

function Session:observe(event, run)
  if event == "start" then
    self.depth = self.depth + 1
    if self.depth == 1 then
      self.label = run.name
      if self.live then self:new_period() end
    end
    return
  end
  self.depth = self.depth - 1
  if self.depth == 0 then self.label = nil end
  self.runs[#self.runs + 1] = run
  if run.parent == nil and run.state == "failed" then self.failed = true end
  if self.summaries then
    self:clear_live()
    self:say(summary(run))
  end
end

-- === the report ==========================================================

local NULL = cjson.null
-- lua-cjson 2.1 encodes an empty table as {}: lists are marked with this
-- and swapped for [] after encoding.
local EMPTY_LIST = "\0weft:empty-list\0"

local function list(t)
  return #t > 0 and t or EMPTY_LIST
end

local function error_entry(err, depth)
  if err == nil then return NULL end
  depth = depth or 0
  if type(err) ~= "table" then
    return { kind = "error", message = tostring(err), traceback = NULL, cause = NULL }
  end
  return {
    kind = err.kind and tostring(err.kind) or "error",
    message = tostring(err.message or err),
    traceback = err.traceback and tostring(err.traceback) or NULL,
    cause = depth < 8 and error_entry(err.cause, depth + 1) or NULL,
  }
end

function Session:epoch(t)
  if t == nil then return NULL end
  return self.offset + t
end

local function duration(a, b)
  if a == nil or b == nil then return NULL end
  return b - a
end

function Session:task_entry(rec)
  return {
    name = tostring(rec.name),
    state = tostring(rec.state),
    attempts = rec.attempts or 0,
    worker = rec.worker or NULL,
    start = self:epoch(rec.start),
    finish = self:epoch(rec.finish),
    duration = duration(rec.start, rec.finish),
    error = error_entry(rec.error),
  }
end

function Session:flow_entry(run)
  local tasks = {}
  for i, rec in ipairs(run.tasks) do tasks[i] = self:task_entry(rec) end
  return {
    name = tostring(run.name),
    parent = run.parent and tostring(run.parent.name) or NULL,
    state = tostring(run.state),
    started = self:epoch(run.started),
    finished = self:epoch(run.finished),
    duration = duration(run.started, run.finished),
    error = error_entry(run.error),
    tasks = list(tasks),
  }
end

function Session:write_report(outcome, message, status)
  local flows, args = {}, {}
  for i, run in ipairs(self.runs) do flows[i] = self:flow_entry(run) end
  for i = 1, #self.arg do args[i] = tostring(self.arg[i]) end
  local now = core.now()
  local text = cjson.encode {
    weft = weft.version,
    script = tostring(self.script),
    args = list(args),
    executor = self.executor,
    status = outcome,
    exit_code = status,
    error = message or NULL,
    started = self:epoch(self.started),
    finished = self:epoch(now),
    duration = now - self.started,
    flows = list(flows),
  }
  text = text:gsub('"\\u0000weft:empty%-list\\u0000"', "[]")
  local f, err = io.open(self.report, "w")
  if not f then
    self:say(format("weft: cannot write the report: %s\n", err))
    return false
  end
  f:write(text, "\n")
  f:close()
  return true
end

--- session:finish(outcome, message [, status]) -> exit status.  outcome:
--- "completed" (the script returned), "error" (it raised: message is the
--- error with its traceback), "interrupted", or "exited" (os.exit(status)).
function Session:finish(outcome, message, exit_status)
  if self.finished then return self.finished end
  core.set_ticker(nil)
  self:clear_live()
  self.live = false
  self.unobserve()
  local status = 0
  if outcome == "exited" then
    status = exit_status
  elseif outcome == "interrupted" then
    status = 130
  elseif outcome == "error" or self.failed then
    status = 1
  end
  if self.report and not self:write_report(outcome, message, status) and status == 0 then
    status = 1
  end
  self.finished = status
  return status
end

-- === the REPL ============================================================

--- runner.repl(before_output): log records as `weft run` prints them;
--- before_output() runs before each (the REPL clears its idle prompt).
function runner.repl(before_output)
  core.set_log_sink(function(record)
    before_output()
    stderr:write(log_line(record))
    stderr:flush()
  end)
end

return runner
